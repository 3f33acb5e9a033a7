// SPDX-License-Identifier: GPL-2.0
//! Block devices, safely: O_DIRECT opening, aligned buffers, geometry, and
//! the zero-out and discard ioctls.  The helper's other unsafe-free code
//! does its block I/O through this layer.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Memory alignment of I/O buffers (covers every logical block size).
pub const BUF_ALIGN: usize = 4096;

/// A zeroed, aligned buffer for O_DIRECT, grown on demand.
pub struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
}

impl AlignedBuf {
    pub fn new() -> Self {
        AlignedBuf {
            ptr: std::ptr::null_mut(),
            cap: 0,
        }
    }

    /// At least `len` bytes, aligned to [`BUF_ALIGN`].
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        if len > self.cap {
            self.free();
            let cap = len.next_power_of_two().max(BUF_ALIGN);
            let layout = Layout::from_size_align(cap, BUF_ALIGN).expect("buffer layout");
            // SAFETY: a non-zero size.
            let ptr = unsafe { alloc::alloc_zeroed(layout) };
            if ptr.is_null() {
                alloc::handle_alloc_error(layout);
            }
            self.ptr = ptr;
            self.cap = cap;
        }
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: ptr is valid for cap >= len bytes, owned by self, and the
        // returned borrow keeps self borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }

    fn free(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated in get() with this layout.
            unsafe {
                alloc::dealloc(
                    self.ptr,
                    Layout::from_size_align(self.cap, BUF_ALIGN).expect("buffer layout"),
                )
            };
            self.ptr = std::ptr::null_mut();
            self.cap = 0;
        }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.free();
    }
}

// SAFETY: the buffer is owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

/// Opens a device (or, in tests, a file) for direct I/O, bypassing the page
/// cache: a device written below the page cache (an origin under a
/// device-mapper target) must be read this way to see its current data.
pub fn open_direct(path: impl AsRef<Path>, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Logical block size and size in bytes of a block device (a regular
/// file: the common O_DIRECT alignment and its length).
pub fn geometry(f: &File) -> io::Result<(u64, u64)> {
    let md = f.metadata()?;
    if md.file_type().is_block_device() {
        let mut bs: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes an int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::BLKSSZGET as _, &mut bs) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain lseek; a block device's end is its size.
        let size = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((bs.max(512) as u64, size as u64))
    } else {
        Ok((BUF_ALIGN as u64, md.len()))
    }
}

/// `_IO(0x12, 119)` and `_IO(0x12, 127)` of <linux/fs.h> (not in libc).
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn range_ioctl(f: &File, req: libc::c_ulong, off: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [off, len];
    // SAFETY: BLKZEROOUT and BLKDISCARD read two u64s (start, length).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, range.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fallocate(f: &File, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain fallocate on an owned descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes zeroes to `len` bytes at `off` (the device may unmap them); a
/// regular file gets a zeroed range.
pub fn zero_out(f: &File, off: u64, len: u64) -> io::Result<()> {
    if f.metadata()?.file_type().is_block_device() {
        return range_ioctl(f, BLKZEROOUT, off, len);
    }
    fallocate(f, libc::FALLOC_FL_ZERO_RANGE, off, len)
}

/// Discards `len` bytes at `off` (their content is then undefined).
pub fn discard(f: &File, off: u64, len: u64) -> io::Result<()> {
    if f.metadata()?.file_type().is_block_device() {
        return range_ioctl(f, BLKDISCARD, off, len);
    }
    fallocate(
        f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn aligned() {
        let mut b = AlignedBuf::new();
        let s = b.get(100);
        assert_eq!(s.len(), 100);
        assert_eq!(s.as_ptr() as usize % BUF_ALIGN, 0);
        let s = b.get(70000);
        assert_eq!(s.as_ptr() as usize % BUF_ALIGN, 0);
        assert!(s.iter().all(|&x| x == 0));
        assert!(b.get(0).is_empty());
    }

    #[test]
    fn file_zero_and_discard() {
        let dir = std::env::temp_dir().join(format!("foresight-blk-{}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .unwrap();
        f.write_all_at(&[0xaa; 16384], 0).unwrap();
        zero_out(&f, 4096, 4096).unwrap();
        discard(&f, 12288, 4096).unwrap();
        let mut buf = [0u8; 16384];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 0xaa));
        assert!(buf[4096..8192].iter().all(|&x| x == 0));
        assert!(buf[8192..12288].iter().all(|&x| x == 0xaa));
        assert_eq!(geometry(&f).unwrap(), (BUF_ALIGN as u64, 16384));
        std::fs::remove_file(&dir).unwrap();
    }
}
