//! The shared-memory ring of a socket byte stream ([`crate::proto`], "Streams through shared
//! memory"), and passing its file descriptor over the Unix socket.
//!
//! Streamed through `Data` frames, every byte is copied twice by the kernel: into the socket and
//! out of it, which on a small machine costs more than generating it. Through a ring, lokeyd
//! generates straight into memory the client has mapped, and the socket carries only 10-byte
//! `Filled` and `Release` frames.
//!
//! The daemon makes the ring ([`Ring::create`]): a memfd, sealed so that its size can never
//! change (a client that could shrink it would make the daemon's next write fault with
//! SIGBUS), mapped read-write. It sends the client a second, read-only descriptor of the same
//! memory ([`Ring::read_only_fd`], opened through `/proc/self/fd`), so the client can neither
//! write into slots the daemon is filling nor resize the file: the client maps it read-only
//! ([`Ring::open`], which checks the size and the seals before mapping). The daemon never reads
//! the ring, and the client reads a slot only between the daemon's `Filled` and its own
//! `Release`, while the daemon leaves it alone.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, sendmsg};
use nix::sys::stat::{Mode, fstat};

/// The largest ring a client maps: a bound on what a daemon can make it map.
pub const MAX_RING_LEN: usize = 64 << 20;

/// The seals every ring carries: its size is fixed for good.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// A mapped ring of `slots` slots of `slot_len` bytes.
#[derive(Debug)]
pub struct Ring {
    map: NonNull<u8>,
    len: usize,
    slots: u32,
    slot_len: u32,
    writable: bool,
    fd: OwnedFd,
}

// SAFETY: the mapping is owned by this value alone (it is unmapped in `drop`), and access to it
// goes through `&self`/`&mut self`, so moving it to another thread is like moving a `Vec<u8>`.
unsafe impl Send for Ring {}

impl Ring {
    /// A new ring, read-write, for the daemon: a sealed memfd of `slots × slot_len` bytes.
    ///
    /// # Errors
    ///
    /// When the sizes are zero or too large, or memfd_create(2), ftruncate(2), sealing or
    /// mmap(2) fail (e.g. a kernel without memfd, or a seccomp filter refusing it).
    pub fn create(slots: u32, slot_len: u32) -> io::Result<Ring> {
        let len = ring_len(slots, slot_len)?;
        let fd = memfd_create(
            c"lokey-stream",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let size = i64::try_from(len).map_err(io::Error::other)?;
        nix::unistd::ftruncate(&fd, size)?;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS))?;
        Ring::map(fd, len, slots, slot_len, true)
    }

    /// Maps a ring received from the daemon, read-only, after checking that the file is as
    /// large as `slots × slot_len` and sealed against shrinking (else touching it could fault).
    ///
    /// # Errors
    ///
    /// `InvalidData` when the sizes or seals are wrong; the errors of fstat(2), fcntl(2) and
    /// mmap(2).
    pub fn open(fd: OwnedFd, slots: u32, slot_len: u32) -> io::Result<Ring> {
        let len = ring_len(slots, slot_len)?;
        let size = fstat(&fd)?.st_size;
        if usize::try_from(size).map_or(true, |size| size < len) {
            return Err(invalid(format!(
                "the ring's file holds {size} bytes, fewer than {slots} slots of {slot_len}"
            )));
        }
        let seals = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(invalid(
                "the ring's file is not sealed against shrinking".into(),
            ));
        }
        Ring::map(fd, len, slots, slot_len, false)
    }

    fn map(fd: OwnedFd, len: usize, slots: u32, slot_len: u32, writable: bool) -> io::Result<Ring> {
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        let length = NonZeroUsize::new(len).ok_or_else(|| invalid("an empty ring".into()))?;
        // SAFETY: a fresh shared mapping at an address the kernel chooses, of a file at least
        // `len` bytes long whose size is sealed (checked above, or sealed by `create`), so no
        // access within it can fault; it aliases no Rust object, and it lives until `drop`.
        let map = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, &fd, 0)? };
        Ok(Ring {
            map: map.cast(),
            len,
            slots,
            slot_len,
            writable,
            fd,
        })
    }

    /// A read-only descriptor of the ring's memory, for the client: opened anew through
    /// `/proc/self/fd`, so the client cannot write to it, resize it, or reopen it writable.
    ///
    /// # Errors
    ///
    /// When `/proc` is not mounted or the open fails.
    pub fn read_only_fd(&self) -> io::Result<OwnedFd> {
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(fd)
    }

    /// How many slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes per slot.
    pub fn slot_len(&self) -> u32 {
        self.slot_len
    }

    /// Slot `i`, whole.
    ///
    /// # Panics
    ///
    /// When `i` is not a slot.
    pub fn slot(&self, i: u32) -> &[u8] {
        let (start, len) = self.bounds(i);
        // SAFETY: `start + len ≤ self.len`, inside the mapping, which lives as long as `self`.
        // The protocol gives the reader a filled slot alone until it releases it: the daemon
        // writes a slot only after its release (and nothing else can write: the client's
        // descriptor is read-only).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().wrapping_add(start), len) }
    }

    /// Slot `i`, to fill.
    ///
    /// # Panics
    ///
    /// When `i` is not a slot, or on a ring mapped read-only ([`Ring::open`]).
    pub fn slot_mut(&mut self, i: u32) -> &mut [u8] {
        assert!(
            self.writable,
            "a ring received from the daemon is read-only"
        );
        let (start, len) = self.bounds(i);
        // SAFETY: as in `slot`, and `&mut self` makes this the only reference into the mapping;
        // only this process holds a writable descriptor or mapping of the memory.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().wrapping_add(start), len) }
    }

    fn bounds(&self, i: u32) -> (usize, usize) {
        assert!(i < self.slots, "slot {i} of a ring of {}", self.slots);
        let len = self.slot_len as usize;
        (i as usize * len, len)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `len` bytes, unmapped once; no slice into it
        // outlives `self` (they borrow it).
        let _ = unsafe { munmap(self.map.cast(), self.len) };
    }
}

fn ring_len(slots: u32, slot_len: u32) -> io::Result<usize> {
    (slots as usize)
        .checked_mul(slot_len as usize)
        .filter(|&len| len > 0 && len <= MAX_RING_LEN)
        .ok_or_else(|| {
            invalid(format!(
                "a ring of {slots} slots of {slot_len} bytes (at most {MAX_RING_LEN} bytes in all)"
            ))
        })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Sends `bytes` on the Unix socket `socket` with `fd` beside them (`SCM_RIGHTS`): one
/// sendmsg(2), which may write fewer bytes than given (the descriptor goes with the first).
///
/// # Errors
///
/// The errors of sendmsg(2), `WouldBlock` included on a non-blocking socket.
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(sent)
}

/// Reads from the Unix socket `socket` into `buf` like read(2), keeping any descriptors that
/// arrive beside the bytes in `fds` (close-on-exec).
///
/// # Errors
///
/// The errors of recvmsg(2), and `InvalidData` when more descriptors arrived than fit (the
/// kernel then closes the rest).
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let bytes = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for raw in received {
                    // SAFETY: recvmsg(2) just installed this descriptor in our table for us;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
    }
    if truncated {
        return Err(invalid(
            "more file descriptors arrived than expected".into(),
        ));
    }
    Ok(bytes)
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_ring_passed_over_a_socket_shows_what_the_daemon_wrote() {
        let mut ring = Ring::create(3, 4096).unwrap();
        ring.slot_mut(2)[..5].copy_from_slice(b"hello");
        let (a, b) = UnixStream::pair().unwrap();
        let fd = ring.read_only_fd().unwrap();
        assert_eq!(send_with_fd(a.as_fd(), b"ring", fd.as_fd()).unwrap(), 4);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap(), 4);
        assert_eq!(&buf[..4], b"ring");
        assert_eq!(fds.len(), 1);
        let seen = Ring::open(fds.pop().unwrap(), 3, 4096).unwrap();
        assert_eq!(&seen.slot(2)[..5], b"hello");
        // Written after the client mapped it: the same memory, not a copy.
        ring.slot_mut(0)[0] = 0xA5;
        assert_eq!(seen.slot(0)[0], 0xA5);
    }

    #[test]
    fn the_client_cannot_write_or_resize_the_ring() {
        let ring = Ring::create(2, 4096).unwrap();
        let fd = ring.read_only_fd().unwrap();
        // Its descriptor is read-only: no writable mapping, no ftruncate.
        let length = NonZeroUsize::new(8192).unwrap();
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: expected to fail; had it succeeded, the mapping is unmapped at once.
        let writable = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, &fd, 0) };
        if let Ok(map) = writable {
            // SAFETY: the mapping just made.
            let _ = unsafe { munmap(map, 8192) };
            panic!("a read-only ring descriptor was mapped writable");
        }
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        // And the daemon's own descriptor cannot resize it either: the seals forbid it.
        assert_eq!(
            nix::unistd::ftruncate(ring.as_fd(), 0),
            Err(nix::errno::Errno::EPERM)
        );
        assert_eq!(
            fcntl(ring.as_fd(), FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)),
            Err(nix::errno::Errno::EPERM)
        );
    }

    #[test]
    fn a_client_refuses_a_ring_smaller_than_announced_or_unsealed() {
        let ring = Ring::create(2, 4096).unwrap();
        let err = Ring::open(ring.read_only_fd().unwrap(), 3, 4096).unwrap_err();
        assert!(err.to_string().contains("fewer than 3 slots"), "{err}");
        let plain = memfd_create(c"plain", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&plain, 4096).unwrap();
        let err = Ring::open(plain, 1, 4096).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
        let err = Ring::open(ring.read_only_fd().unwrap(), 1024, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    #[should_panic(expected = "read-only")]
    fn a_received_ring_is_not_filled() {
        let ring = Ring::create(1, 4096).unwrap();
        let mut seen = Ring::open(ring.read_only_fd().unwrap(), 1, 4096).unwrap();
        seen.slot_mut(0);
    }
}
