// SPDX-License-Identifier: GPL-2.0

//! Building netlink messages: attributes into a socket buffer.

use crate::dm::bindings as b;
use core::ptr::NonNull;
use kernel::{
    bindings,
    error::to_result,
    prelude::*, //
};

/// Attributes being added to a message of the family.
///
/// # Invariants
///
/// `skb` is a valid socket buffer, owned by the caller of the function that
/// lent this `Msg` out, with a generic netlink header already put.
pub struct Msg<'a> {
    skb: NonNull<bindings::sk_buff>,
    _skb: core::marker::PhantomData<&'a mut bindings::sk_buff>,
}

impl Msg<'_> {
    /// # Safety
    ///
    /// `skb` must be valid for writing, with a generic netlink header put, for `'a`.
    pub(super) unsafe fn from_raw<'a>(skb: *mut bindings::sk_buff) -> Msg<'a> {
        Msg {
            // SAFETY: The caller promises a valid pointer.
            skb: unsafe { NonNull::new_unchecked(skb) },
            _skb: core::marker::PhantomData,
        }
    }

    fn put_raw(&mut self, attr: u32, data: &[u8]) -> Result {
        // SAFETY: `skb` is valid (type invariant); `data` is readable for its length.
        to_result(unsafe {
            bindings::nla_put(
                self.skb.as_ptr(),
                attr as c_int,
                data.len() as c_int,
                data.as_ptr().cast(),
            )
        })
    }

    /// Puts a `u8` attribute.
    pub fn put_u8(&mut self, attr: u32, v: u8) -> Result {
        self.put_raw(attr, &[v])
    }

    /// Puts a `u32` attribute.
    pub fn put_u32(&mut self, attr: u32, v: u32) -> Result {
        self.put_raw(attr, &v.to_ne_bytes())
    }

    /// Puts a `u64` attribute (4-byte aligned, as netlink allows).
    pub fn put_u64(&mut self, attr: u32, v: u64) -> Result {
        self.put_raw(attr, &v.to_ne_bytes())
    }

    /// Puts a NUL-terminated string attribute.
    pub fn put_str(&mut self, attr: u32, s: &CStr) -> Result {
        self.put_raw(attr, s.to_bytes_with_nul())
    }

    /// Puts a binary attribute.
    pub fn put_bytes(&mut self, attr: u32, data: &[u8]) -> Result {
        self.put_raw(attr, data)
    }

    /// Puts a nested attribute whose contents `f` adds; on an error (the
    /// message is full) the nest is removed again.
    pub fn nest(&mut self, attr: u32, f: impl FnOnce(&mut Msg<'_>) -> Result) -> Result {
        let skb = self.skb.as_ptr();
        // SAFETY: `skb` is valid (type invariant).
        let mark = unsafe { (*skb).len };
        // SAFETY: `skb` is valid.
        let nest = unsafe { b::foresight_nla_nest_start(skb, attr as c_int) };
        if nest.is_null() {
            return Err(EMSGSIZE);
        }
        match f(self) {
            Ok(()) => {
                // SAFETY: `nest` was started on `skb` above.
                unsafe { b::foresight_nla_nest_end(skb, nest) };
                Ok(())
            }
            Err(e) => {
                // SAFETY: `mark` is the length before the nest; trimming back to it removes the
                // nest and everything put into it (what nla_nest_cancel does).
                unsafe { bindings::skb_trim(skb, mark) };
                Err(e)
            }
        }
    }
}

/// A message for multicast, owning its socket buffer until sent.
///
/// # Invariants
///
/// `skb` is an owned socket buffer with a generic netlink header at `hdr`.
pub struct Multicast {
    skb: NonNull<bindings::sk_buff>,
    hdr: NonNull<c_void>,
}

// SAFETY: The message is owned and can be built and sent from any thread.
unsafe impl Send for Multicast {}

impl Multicast {
    /// A new message with command `cmd`, room for `size` bytes of
    /// attributes.  Process context.
    pub fn new(cmd: u8, size: usize) -> Result<Self> {
        // SAFETY: Plain allocation (process context).
        let skb = NonNull::new(unsafe { bindings::genlmsg_new(size, bindings::GFP_KERNEL) })
            .ok_or(ENOMEM)?;
        // SAFETY: `skb` is a fresh message; the family is static.
        let hdr = unsafe { bindings::genlmsg_put(skb.as_ptr(), 0, 0, super::family(), 0, cmd) };
        let Some(hdr) = NonNull::new(hdr) else {
            // SAFETY: `skb` is owned and not sent.
            unsafe { bindings::nlmsg_free(skb.as_ptr()) };
            return Err(EMSGSIZE);
        };
        Ok(Self { skb, hdr })
    }

    /// The attributes of the message.
    pub fn msg(&mut self) -> Msg<'_> {
        // SAFETY: `skb` is owned with a header put (type invariant).
        unsafe { Msg::from_raw(self.skb.as_ptr()) }
    }

    /// Bytes of attribute room left.
    pub fn room(&self) -> usize {
        // SAFETY: `skb` is valid (type invariant).
        unsafe {
            (*self.skb.as_ptr())
                .end
                .saturating_sub((*self.skb.as_ptr()).tail) as usize
        }
    }

    /// Sends the message to multicast group `group`.  `ESRCH`: nobody
    /// listens; `ENOBUFS`: a listener's socket was full and missed it.
    /// Process context.
    pub fn send(self, group: u32) -> Result {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: The message is complete; `genlmsg_multicast` takes ownership of `skb`.
        unsafe {
            bindings::genlmsg_end(me.skb.as_ptr(), me.hdr.as_ptr());
            to_result(bindings::genlmsg_multicast(
                super::family(),
                me.skb.as_ptr(),
                0,
                group,
                bindings::GFP_KERNEL,
            ))
        }
    }
}

impl Drop for Multicast {
    fn drop(&mut self) {
        // SAFETY: The message is owned and was not sent (`send` forgets `self`).
        unsafe { bindings::nlmsg_free(self.skb.as_ptr()) };
    }
}
