//! The raw system calls behind [`super::KernelPool`]: the workspace's only `unsafe` code.
//!
//! Three calls, each wrapped in a safe function whose argument types make misuse impossible:
//! - `ioctl(fd, RNDADDENTROPY, struct rand_pool_info *)` ([`add_entropy`]),
//! - `ioctl(fd, RNDGETENTCNT, int *)` ([`entropy_count`]),
//! - `getrandom(buf, len, GRND_NONBLOCK)` ([`getrandom_nonblock`]).
//!
//! The layout and request codes come from the kernel's `include/uapi/linux/random.h`:
//!
//! ```c
//! #define RNDGETENTCNT  _IOR( 'R', 0x00, int )
//! #define RNDADDENTROPY _IOW( 'R', 0x03, int [2] )
//! struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[0]; };
//! ```
//!
//! The size encoded in RNDADDENTROPY is that of the 8-byte header (`int[2]`), not of the payload
//! that follows it, so the request code is built with `request_code_write!` and used with
//! nix's `_bad` macro variant, which takes a ready-made code.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use libc::c_int;
use zeroize::Zeroize;

/// The fixed header of `struct rand_pool_info` (`include/uapi/linux/random.h`).
///
/// `entropy_count` is in bits and `buf_size` in bytes; `buf_size` payload bytes follow at
/// offset 8. The kernel reads them with `copy_from_user`, so the payload only has to be
/// contiguous with the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RandPoolInfoHeader {
    pub(super) entropy_count: c_int,
    pub(super) buf_size: c_int,
}

/// `RNDGETENTCNT`: `_IOR('R', 0x00, int)`.
pub(super) const RNDGETENTCNT: nix::sys::ioctl::ioctl_num_type =
    nix::request_code_read!(b'R', 0x00, size_of::<c_int>());

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
pub(super) const RNDADDENTROPY: nix::sys::ioctl::ioctl_num_type =
    nix::request_code_write!(b'R', 0x03, 2 * size_of::<c_int>());

nix::ioctl_read_bad!(rnd_get_ent_cnt, RNDGETENTCNT, c_int);
nix::ioctl_write_ptr_bad!(rnd_add_entropy, RNDADDENTROPY, RandPoolInfoHeader);

/// A `struct rand_pool_info` with its payload, built in one 4-byte-aligned allocation and
/// wiped when dropped (it holds the entropy being handed to the kernel).
///
/// Invariant: `words` holds the header (two words) followed by at least `buf_size` payload
/// bytes, and `buf_size` equals the payload length given to [`RandPoolInfo::new`].
pub(super) struct RandPoolInfo {
    words: Vec<u32>,
}

impl RandPoolInfo {
    /// Builds the request; `None` if the length does not fit the header's `int`.
    pub(super) fn new(entropy_count: c_int, payload: &[u8]) -> Option<Self> {
        let buf_size = c_int::try_from(payload.len()).ok()?;
        let header = RandPoolInfoHeader {
            entropy_count,
            buf_size,
        };
        let mut words = Vec::with_capacity(2 + payload.len().div_ceil(4));
        // Native byte order, exactly as the repr(C) header lies in memory.
        words.push(u32::from_ne_bytes(header.entropy_count.to_ne_bytes()));
        words.push(u32::from_ne_bytes(header.buf_size.to_ne_bytes()));
        for chunk in payload.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            words.push(u32::from_ne_bytes(word));
            word.zeroize();
        }
        Some(Self { words })
    }

    /// The request as bytes (for tests: what the kernel will read).
    #[cfg(test)]
    fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

impl Drop for RandPoolInfo {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

/// `ioctl(fd, RNDADDENTROPY, info)`: mixes the payload into the input pool and credits
/// `entropy_count` bits. Needs CAP_SYS_ADMIN in the initial user namespace (else `EPERM`).
pub(super) fn add_entropy(fd: BorrowedFd<'_>, info: &RandPoolInfo) -> nix::Result<()> {
    let header: *const RandPoolInfoHeader = info.words.as_ptr().cast();
    // SAFETY: `fd` is a live descriptor (borrowed). `header` points at `info.words`, a live,
    // 4-byte-aligned allocation holding a valid `RandPoolInfoHeader` in its first 8 bytes
    // followed by at least `buf_size` payload bytes (the `RandPoolInfo` invariant), which is
    // all the kernel reads (`random_ioctl` copies the header, then `buf_size` bytes after it).
    // The kernel does not keep the pointer after the call returns.
    unsafe { rnd_add_entropy(fd.as_raw_fd(), header) }.map(drop)
}

/// `ioctl(fd, RNDGETENTCNT, &count)`: the input pool's credited bits. Needs no capability.
pub(super) fn entropy_count(fd: BorrowedFd<'_>) -> nix::Result<c_int> {
    let mut count: c_int = 0;
    // SAFETY: `fd` is a live descriptor; `&mut count` is a valid, aligned `int` the kernel
    // writes (`put_user`) before returning, and nothing else aliases it during the call.
    unsafe { rnd_get_ent_cnt(fd.as_raw_fd(), &mut count) }?;
    Ok(count)
}

/// `getrandom(buf, len, GRND_NONBLOCK)`: `EAGAIN` while the kernel CRNG is not yet initialised.
/// Returns the number of bytes written.
pub(super) fn getrandom_nonblock(buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call, and
    // getrandom(2) writes at most that many bytes into it.
    let ret = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    // A negative return means failure with errno set; otherwise it is a byte count ≤ len.
    usize::try_from(ret).map_err(|_| nix::errno::Errno::last())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    /// The request codes, pinned: asm-generic `_IOC` encoding, shared by x86, x86_64, arm and
    /// aarch64 (ppc, mips and sparc encode direction bits differently).
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm"
    ))]
    fn request_codes_match_the_kernel_header() {
        assert_eq!(u64::from(RNDADDENTROPY as u32), 0x4008_5203);
        assert_eq!(u64::from(RNDGETENTCNT as u32), 0x8004_5200);
    }

    #[test]
    fn header_layout_matches_struct_rand_pool_info() {
        assert_eq!(size_of::<RandPoolInfoHeader>(), 8);
        assert_eq!(align_of::<RandPoolInfoHeader>(), 4);
        assert_eq!(offset_of!(RandPoolInfoHeader, entropy_count), 0);
        assert_eq!(offset_of!(RandPoolInfoHeader, buf_size), 4);
        assert_eq!(align_of::<u32>(), align_of::<RandPoolInfoHeader>());
    }

    #[test]
    fn request_bytes_are_header_then_payload() {
        let payload: Vec<u8> = (1..=7).collect();
        let info = RandPoolInfo::new(56, &payload).expect("fits");
        let bytes = info.to_bytes();
        assert_eq!(bytes[0..4], 56i32.to_ne_bytes());
        assert_eq!(bytes[4..8], 7i32.to_ne_bytes());
        assert_eq!(bytes[8..15], payload[..]);
        // Padded to a whole word; the kernel reads only buf_size bytes.
        assert_eq!(bytes.len(), 16);
    }
}
