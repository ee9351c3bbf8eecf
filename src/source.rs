//! Entropy sources: where raw random bytes come from before they are health-tested.
//!
//! # Contract
//!
//! A [`Source`] is owned by one thread (the daemon gives each source its own harvest thread,
//! so a slow I2C bus never blocks anything else). [`Source::read`] fills a buffer with raw
//! output or fails with a [`SourceError`] whose [`ErrorKind`] tells the caller whether to retry
//! soon, back off because the device is gone, or give up. [`Source::rest`] lets the device
//! save power while nobody needs data (the chip idles or sleeps); the next `read` wakes it.
//!
//! Nothing here judges the data: every byte goes through [`crate::health`] before use.
//!
//! # Kinds
//!
//! - [`SourceKind::Atecc608a`]: the chip's RNG over I2C (its source lives with the driver).
//! - [`SourceKind::Emulator`]: the chip emulator; its output is served (labelled) but never
//!   credited to the kernel, because it comes from the operating system's own RNG.
//! - [`SourceKind::Hwrng`]: Linux `/dev/hwrng` ([`Hwrng`]), e.g. the Raspberry Pi's
//!   bcm2835/iproc RNG or virtio-rng in a VM.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A real ATECC608A.
    Atecc608a,
    /// The ATECC608A emulator.
    Emulator,
    /// Linux `/dev/hwrng`.
    Hwrng,
    /// Any other character device or FIFO (a USB TRNG, for example).
    Device,
}

impl SourceKind {
    /// The kind's name in configuration, status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Atecc608a => "atecc608a",
            SourceKind::Emulator => "emulator",
            SourceKind::Hwrng => "hwrng",
            SourceKind::Device => "device",
        }
    }

    /// Whether output of this kind may ever be credited to the kernel as entropy. The emulator
    /// draws from the kernel's own RNG: crediting it back would be fake entropy.
    pub fn may_credit(self) -> bool {
        !matches!(self, SourceKind::Emulator)
    }
}

/// How a read failed, for the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A passing fault (a NACK, a CRC error, an interrupted read): retry soon.
    Transient,
    /// The device is not there (unplugged, driver unbound): retry with backoff.
    Gone,
    /// The device is unusable until a person acts (unlocked chip, wrong device, no
    /// permission): report and retry rarely.
    Fatal,
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// What the caller should do.
    pub kind: ErrorKind,
    /// What happened and, where it helps, what to do.
    pub message: String,
}

impl SourceError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            message: message.into(),
        }
    }
}

/// A raw entropy source.
pub trait Source: Send {
    /// The source's name (from the configuration, e.g. `chip` or `hwrng`).
    fn name(&self) -> &str;
    /// What it is.
    fn kind(&self) -> SourceKind;
    /// Fills `out` with raw output.
    ///
    /// # Errors
    ///
    /// [`SourceError`] with the kind of failure.
    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError>;
    /// Lets the device rest until the next read; `deep` for a long pause (sleep rather than
    /// idle). The default does nothing.
    fn rest(&mut self, deep: bool) {
        let _ = deep;
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn kind(&self) -> SourceKind {
        (**self).kind()
    }
    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        (**self).read(out)
    }
    fn rest(&mut self, deep: bool) {
        (**self).rest(deep);
    }
}

/// The default hardware RNG device node.
pub const HWRNG_PATH: &str = "/dev/hwrng";
const HWRNG_SYSFS: &str = "/sys/class/misc/hw_random";

/// Linux `/dev/hwrng`: the kernel's interface to the machine's own hardware RNG.
#[derive(Debug)]
pub struct Hwrng {
    name: String,
    kind: SourceKind,
    path: PathBuf,
    file: Option<File>,
    /// Opened by [`Hwrng::open_now`] (before privileges were dropped): kept open through
    /// rests, because the process may no longer be allowed to open it again.
    keep_open: bool,
}

/// What the kernel says about its current hardware RNG.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HwrngInfo {
    /// The driver behind `/dev/hwrng` (`rng_current`), e.g. `bcm2835-rng` or `virtio_rng.0`.
    pub current: String,
    /// The quality the kernel credits it with itself (`rng_quality`, per mille of a bit per
    /// bit; 0 when the kernel does not feed it to the pool on its own).
    pub kernel_quality: u32,
}

impl Hwrng {
    /// A source reading `path` (usually [`HWRNG_PATH`]); the device is opened on first read.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Hwrng {
        Hwrng {
            name: name.into(),
            kind: SourceKind::Hwrng,
            path: path.into(),
            file: None,
            keep_open: false,
        }
    }

    /// Opens the device now (before privileges are dropped: `/dev/hwrng` is usually
    /// root-only), so that later reads need no permission. The device then stays open when
    /// the source rests (a quarantine, no demand), since it might not open again.
    ///
    /// # Errors
    ///
    /// [`SourceError`] naming the device.
    pub fn open_now(mut self) -> Result<Hwrng, SourceError> {
        self.open()?;
        self.keep_open = true;
        Ok(self)
    }

    /// Whether `/dev/hwrng` exists and has a driver behind it.
    pub fn available() -> bool {
        Path::new(HWRNG_PATH).exists()
            && Hwrng::info().is_some_and(|i| !i.current.is_empty() && i.current != "none")
    }

    /// The kernel's description of its hardware RNG, when it has one.
    pub fn info() -> Option<HwrngInfo> {
        let read = |name: &str| {
            std::fs::read_to_string(Path::new(HWRNG_SYSFS).join(name))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let current = read("rng_current")?;
        // Older kernels have no rng_quality; the module parameter holds the default then.
        let quality = read("rng_quality")
            .or_else(|| {
                std::fs::read_to_string("/sys/module/rng_core/parameters/default_quality")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some(HwrngInfo {
            current,
            kernel_quality: quality,
        })
    }

    /// Any character device or FIFO at `path` as a source of kind [`SourceKind::Device`]:
    /// opened without waiting for a FIFO's writer and without becoming the controlling
    /// terminal; a terminal (a USB TRNG at `/dev/ttyACM0`) is put into raw mode, so that no
    /// byte is translated, swallowed or echoed.
    pub fn device(name: impl Into<String>, path: impl Into<PathBuf>) -> Hwrng {
        Hwrng {
            kind: SourceKind::Device,
            ..Hwrng::new(name, path)
        }
    }

    fn open(&mut self) -> Result<&mut File, SourceError> {
        if self.file.is_none() {
            let file = match self.kind {
                SourceKind::Device => open_device(&self.path),
                _ => File::open(&self.path),
            }
            .map_err(|e| self.io_error(&e))?;
            self.file = Some(file);
        }
        // Just set above when it was None.
        self.file
            .as_mut()
            .ok_or_else(|| SourceError::new(ErrorKind::Gone, "hwrng not open"))
    }

    fn io_error(&self, e: &io::Error) -> SourceError {
        let path = self.path.display();
        match e.kind() {
            io::ErrorKind::NotFound if self.kind == SourceKind::Device => SourceError::new(
                ErrorKind::Gone,
                format!("{path} does not exist (is the device plugged in?)"),
            ),
            io::ErrorKind::NotFound => SourceError::new(
                ErrorKind::Gone,
                format!("{path} does not exist (no hardware RNG driver loaded)"),
            ),
            io::ErrorKind::PermissionDenied => SourceError::new(
                ErrorKind::Fatal,
                format!(
                    "permission denied opening {path}: it is usually root-only (mode 0600); \
                     run lokeyd as root or give its user access with a udev rule"
                ),
            ),
            _ if e.raw_os_error() == Some(libc::ENODEV) => SourceError::new(
                ErrorKind::Gone,
                format!("{path}: no hardware RNG is selected (rng_current is none)"),
            ),
            _ => SourceError::new(ErrorKind::Transient, format!("reading {path}: {e}")),
        }
    }
}

/// Opens a device node for reading: `O_NONBLOCK` only for the open (a FIFO without a writer
/// would block it), `O_NOCTTY`, and raw mode for a terminal.
fn open_device(path: &Path) -> io::Result<File> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    if nix::unistd::isatty(&file).unwrap_or(false) {
        let mut mode = tcgetattr(&file)?;
        cfmakeraw(&mut mode);
        tcsetattr(&file, SetArg::TCSANOW, &mode)?;
    }
    Ok(file)
}

impl Source for Hwrng {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        let result = self.open()?.read_exact(out);
        if let Err(e) = result {
            // Reopen next time: the driver may have changed under us.
            self.file = None;
            return Err(match e.kind() {
                io::ErrorKind::UnexpectedEof => SourceError::new(
                    ErrorKind::Gone,
                    format!("{} returned no data", self.path.display()),
                ),
                _ => self.io_error(&e),
            });
        }
        Ok(())
    }

    fn rest(&mut self, deep: bool) {
        // Closing lets the kernel's driver power the device down on a long pause, unless it
        // was opened with privileges the process no longer has.
        if deep && !self.keep_open {
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `skipped: <why>` straight to stderr (the harness captures `eprintln!` of passing tests).
    macro_rules! skipped {
        ($($arg:tt)*) => {{
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), $($arg)*);
        }};
    }

    #[test]
    fn emulator_output_may_never_be_credited() {
        assert!(!SourceKind::Emulator.may_credit());
        assert!(SourceKind::Atecc608a.may_credit());
        assert!(SourceKind::Hwrng.may_credit());
    }

    #[test]
    fn a_missing_device_is_gone_and_named() {
        let mut s = Hwrng::new("hwrng", "/nonexistent/hwrng");
        let err = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Gone);
        assert!(err.message.contains("/nonexistent/hwrng"), "{err}");
    }

    #[test]
    fn a_device_source_opens_a_fifo_without_a_writer_and_reads_it_exactly() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trng");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer yet: a blocking open would hang here.
        let mut s = Hwrng::device("usb", &path).open_now().unwrap();
        assert_eq!(s.kind(), SourceKind::Device);
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        writer.write_all(&data).unwrap();
        let mut out = [0u8; 64];
        s.read(&mut out).unwrap();
        assert_eq!(out[..], data[..]);
        let e = Hwrng::device("usb", dir.path().join("gone"))
            .read(&mut out)
            .unwrap_err();
        assert!(e.message.contains("plugged in"), "{e}");
    }

    #[test]
    fn a_terminal_device_is_read_raw() {
        use std::io::Write as _;
        let pty = nix::pty::openpty(None, None).unwrap();
        let path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
        ))
        .unwrap();
        let mut s = Hwrng::device("tty", &path).open_now().unwrap();
        // CR, ^C, ^D, ^S, DEL and a byte with the high bit: a terminal in its default (cooked)
        // mode would translate CR, signal on ^C, end input at ^D and buffer until a newline.
        let data = [0x0D, 0x03, 0x04, 0x13, 0x7F, 0xFF, 0x0A, 0x41];
        let mut master = std::fs::File::from(pty.master);
        master.write_all(&data).unwrap();
        let mut out = [0u8; 8];
        s.read(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_device_opened_before_privileges_were_dropped_stays_open_through_rests() {
        let dir = std::env::temp_dir().join(format!("lokey-hwrng-{}", std::process::id()));
        std::fs::write(&dir, [7u8; 64]).unwrap();
        let mut early = Hwrng::new("hwrng", &dir).open_now().unwrap();
        let mut late = Hwrng::new("hwrng", &dir);
        let mut block = [0u8; 32];
        late.read(&mut block).unwrap();
        std::fs::remove_file(&dir).unwrap();
        // The path is gone (as good as no longer permitted): only the early one still reads.
        early.rest(true);
        late.rest(true);
        assert!(early.read(&mut block).is_ok());
        assert!(late.read(&mut block).is_err());
    }

    #[test]
    fn an_empty_device_is_gone() {
        let mut s = Hwrng::new("null", "/dev/null");
        let err = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Gone);
    }

    #[test]
    fn the_real_hwrng_is_read_where_the_machine_has_one() {
        if !Hwrng::available() {
            skipped!("skipped: this machine has no /dev/hwrng with a driver behind it");
            return;
        }
        let mut s = Hwrng::new("hwrng", HWRNG_PATH);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        match s.read(&mut a) {
            Err(e) if e.kind == ErrorKind::Fatal => {
                skipped!("skipped: {e}");
            }
            other => {
                other.unwrap();
                s.read(&mut b).unwrap();
                // Two 64-byte reads of a working RNG are equal with probability 2^-512.
                assert_ne!(a, b);
                let info = Hwrng::info().unwrap();
                assert!(!info.current.is_empty());
            }
        }
    }
}
