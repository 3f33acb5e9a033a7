// SPDX-License-Identifier: GPL-2.0

//! Devices a target maps onto: `dm_get_device`/`dm_put_device` as RAII.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

use super::{
    bindings as dmb,
    Ctor, //
};
use core::ptr::NonNull;
use kernel::{
    prelude::*,
    str::CStrExt, //
};

/// An underlying block device held by a target.
///
/// # Invariants
///
/// `dev` was returned by a successful `dm_get_device(ti, ...)` and is put
/// exactly once, in [`Drop`].  `ti` is the target that got it; device-mapper
/// keeps `ti` alive until after its destructor has dropped the target's
/// private data, which owns this value.
pub struct Device {
    dev: NonNull<dmb::dm_dev>,
    ti: NonNull<dmb::dm_target>,
}

// SAFETY: A `dm_dev` is not tied to the thread that opened it; dm_put_device may run anywhere.
unsafe impl Send for Device {}
// SAFETY: Shared access only reads immutable fields of the `dm_dev` and its block device.
unsafe impl Sync for Device {}

impl Device {
    /// Opens `path` (a device path or `major:minor`) for the target under
    /// construction, with the table's mode.
    pub fn open(ctor: &Ctor<'_>, path: &CStr) -> Result<Self> {
        let ti = ctor.as_raw();
        let mut dev: *mut dmb::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is the target under construction, so `ti->table` is valid.
        let mode = unsafe { dmb::dm_table_get_mode((*ti).table) };
        // SAFETY: `ti` is valid, `path` is a valid C string, `dev` is a valid out-pointer.
        kernel::error::to_result(unsafe {
            dmb::dm_get_device(ti, path.as_char_ptr(), mode, &mut dev)
        })?;
        let dev = NonNull::new(dev).ok_or(EINVAL)?;
        // SAFETY: `ti` is non-null: it came from device-mapper.
        let ti = unsafe { NonNull::new_unchecked(ti) };
        // INVARIANT: `dev` comes from a successful `dm_get_device(ti, ...)`.
        Ok(Self { dev, ti })
    }

    pub(super) fn bdev(&self) -> *mut kernel::bindings::block_device {
        // SAFETY: By the type invariants, `dev` is a valid `dm_dev` until dropped.
        unsafe { (*self.dev.as_ptr()).bdev }
    }

    pub(super) fn as_raw(&self) -> *mut dmb::dm_dev {
        self.dev.as_ptr()
    }

    /// The device's name as device-mapper prints it in tables (`major:minor`).
    pub fn name(&self) -> &CStr {
        // SAFETY: By the type invariants, `dev` is valid; `name` is a NUL-terminated array
        // filled by dm_get_device.
        unsafe { CStr::from_char_ptr((*self.dev.as_ptr()).name.as_ptr()) }
    }

    /// The device's size in 512-byte sectors.
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: `bdev()` is a valid, open block device while `self` lives.
        unsafe { dmb::foresight_bdev_nr_sectors(self.bdev()) }
    }

    /// The device's number (`dev_t`).
    pub fn devt(&self) -> u32 {
        // SAFETY: `bdev()` is a valid, open block device while `self` lives.
        unsafe { dmb::foresight_bdev_dev(self.bdev()) }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `dev` came from `dm_get_device(ti, ...)`, `ti` is still
        // valid, and this is the only put.
        unsafe { dmb::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}

/// Copies the current name of the mapped device numbered `devt` (as from
/// [`super::Ctor::md_devt`]) into `buf`; its length, or `None` if that
/// device is gone or going.  May sleep.
pub fn device_name(devt: u32, buf: &mut [u8; dmb::FORESIGHT_NAME_LEN as usize]) -> Option<usize> {
    // SAFETY: `buf` has room for a device-mapper name and its NUL (DM_NAME_LEN); the helper
    // holds a reference on the device while copying.
    let r = unsafe { dmb::foresight_dm_name(devt, buf.as_mut_ptr().cast()) };
    if r < 0 {
        return None;
    }
    buf.iter().position(|&c| c == 0)
}
