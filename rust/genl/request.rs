// SPDX-License-Identifier: GPL-2.0

//! Requests (`do`) and dumps (`dump`) as the generated handlers receive them.

use super::Msg;
use crate::dm::bindings as b;
use core::ptr::NonNull;
use kernel::{
    bindings,
    prelude::*, //
};

/// Why a request failed: an errno, the extended-ack message the caller
/// sees, and the attribute at fault (0: none).
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    /// The error returned.
    pub code: Error,
    /// The extack message.
    pub message: &'static CStr,
    /// The offending attribute, or 0.
    pub attr: u32,
}

impl Failure {
    /// A failure of attribute `attr` (0: of the request as a whole).
    pub fn new(code: Error, message: &'static CStr, attr: u32) -> Self {
        Self {
            code,
            message,
            attr,
        }
    }
}

/// The aligned size of an attribute header.
const NLA_HDRLEN: usize = core::mem::size_of::<bindings::nlattr>().next_multiple_of(4);

/// Reads attribute `attr` of `attrs` (an array of `maxattr + 1` pointers
/// filled by the policy-checked parse) as bytes.
///
/// # Safety
///
/// `attrs` must be such an array, with `attr <= maxattr`, valid for `'a`.
unsafe fn payload<'a>(attrs: *mut *mut bindings::nlattr, attr: u32) -> Option<&'a [u8]> {
    // SAFETY: The caller promises `attr` is in bounds of a valid array.
    let nla = unsafe { *attrs.add(attr as usize) };
    if nla.is_null() {
        return None;
    }
    // SAFETY: A parsed attribute is valid: a header of `nla_len` bytes followed by its
    // payload (`NLA_HDRLEN` is the aligned header size).
    unsafe {
        let len = usize::from((*nla).nla_len).saturating_sub(NLA_HDRLEN);
        Some(core::slice::from_raw_parts(
            nla.cast::<u8>().add(NLA_HDRLEN),
            len,
        ))
    }
}

/// Typed access to parsed attributes.
pub trait Attrs {
    /// The attribute's payload, if present.
    fn bytes(&self, attr: u32) -> Option<&[u8]>;

    /// A `u8` attribute (its policy guarantees the size).
    fn u8(&self, attr: u32) -> Option<u8> {
        self.bytes(attr).and_then(|p| p.first().copied())
    }

    /// A `u32` attribute.
    fn u32(&self, attr: u32) -> Option<u32> {
        self.bytes(attr)
            .and_then(|p| p.get(..4))
            .map(|p| u32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
    }

    /// A `u64` attribute.
    fn u64(&self, attr: u32) -> Option<u64> {
        self.bytes(attr).and_then(|p| p.get(..8)).map(|p| {
            let mut a = [0u8; 8];
            a.copy_from_slice(p);
            u64::from_ne_bytes(a)
        })
    }

    /// Whether a flag attribute is present.
    fn flag(&self, attr: u32) -> bool {
        self.bytes(attr).is_some()
    }

    /// A NUL-terminated string attribute, without its NUL.
    fn str(&self, attr: u32) -> Option<&[u8]> {
        self.bytes(attr)
            .map(|p| p.split(|&c| c == 0).next().unwrap_or(p))
    }
}

/// A `do` request.
///
/// # Invariants
///
/// `info` and `skb` are the valid arguments of a generic netlink `doit`
/// call, for `'a`; `info.attrs` was filled by the operation's policy.
pub struct Request<'a> {
    info: NonNull<bindings::genl_info>,
    maxattr: u32,
    _a: core::marker::PhantomData<&'a bindings::genl_info>,
}

impl<'a> Attrs for Request<'a> {
    fn bytes(&self, attr: u32) -> Option<&[u8]> {
        if attr > self.maxattr {
            return None;
        }
        // SAFETY: `attrs` has `maxattr + 1` entries (type invariant), and `attr` is in bounds.
        unsafe { payload(self.info.as_ref().attrs, attr) }
    }
}

impl<'a> Request<'a> {
    /// # Safety
    ///
    /// `info` must be the `genl_info` of a `doit` call whose policy has `maxattr`, valid for `'a`.
    pub(super) unsafe fn from_raw(info: *mut bindings::genl_info, maxattr: u32) -> Self {
        Self {
            // SAFETY: The caller promises a valid pointer.
            info: unsafe { NonNull::new_unchecked(info) },
            maxattr,
            _a: core::marker::PhantomData,
        }
    }

    fn raw(&self) -> *mut bindings::genl_info {
        self.info.as_ptr()
    }

    /// The netlink port id of the sending socket.
    pub fn port(&self) -> u32 {
        // SAFETY: `info` is valid (type invariant).
        unsafe { (*self.raw()).snd_portid }
    }

    /// Sets the extended ack of a failure (`failure.message` is static).
    pub(super) fn set_error(&self, failure: &Failure) {
        // SAFETY: `info` is valid (type invariant); the message is a static C string.
        unsafe {
            b::foresight_genl_set_err(
                self.raw(),
                failure.message.as_char_ptr(),
                failure.attr as c_int,
            )
        };
    }

    /// Every instance of the (multi-)attribute `attr`, as its nested
    /// attributes parsed with `policy` (of `maxattr`): `f` gets each one's
    /// attributes.  Stops at the first error.
    pub fn for_each_nested(
        &self,
        attr: u32,
        maxattr: u32,
        policy: &'static [bindings::nla_policy],
        mut f: impl FnMut(&Nested<'_>) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if policy.len() != maxattr as usize + 1 {
            return Err(Failure::new(EINVAL, c"internal policy mismatch", attr));
        }
        let mut tb: KVec<*mut bindings::nlattr> =
            KVec::from_elem(core::ptr::null_mut(), maxattr as usize + 1, GFP_KERNEL)
                .map_err(|_| Failure::new(ENOMEM, c"out of memory", 0))?;
        let mut pos: *const bindings::nlattr = core::ptr::null();
        loop {
            // SAFETY: `info` is valid; `pos` is null or the previous attribute returned.
            pos = unsafe { b::foresight_genl_nth(self.raw(), attr as c_int, pos) };
            if pos.is_null() {
                return Ok(());
            }
            // SAFETY: `tb` has `maxattr + 1` entries; `pos` is an attribute of the request;
            // `policy` is a policy array of `maxattr + 1` entries.
            let r = unsafe {
                b::foresight_nla_parse_nested(
                    tb.as_mut_ptr(),
                    maxattr as c_int,
                    pos,
                    policy.as_ptr(),
                    self.raw(),
                )
            };
            if r < 0 {
                // The extack is set by the parse.
                return Err(Failure::new(
                    Error::from_errno(r),
                    c"invalid nested attribute",
                    0,
                ));
            }
            f(&Nested {
                tb: tb.as_mut_ptr(),
                maxattr,
                _a: core::marker::PhantomData,
            })?;
        }
    }

    /// The number of instances of the (multi-)attribute `attr`.
    pub fn count(&self, attr: u32) -> usize {
        // SAFETY: `info` is valid (type invariant).
        let n = unsafe { b::foresight_genl_count(self.raw(), attr as c_int) };
        n.max(0) as usize
    }

    /// Replies with command `cmd` and the attributes `f` puts.
    pub fn reply(&self, cmd: u8, f: impl FnOnce(&mut Msg<'_>) -> Result) -> Result {
        // SAFETY: Plain allocation.
        let skb =
            unsafe { bindings::genlmsg_new(bindings::GENLMSG_DEFAULT_SIZE, bindings::GFP_KERNEL) };
        if skb.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `skb` is fresh; `info` is valid.
        let hdr = unsafe { b::foresight_genl_put_reply(skb, self.raw(), cmd) };
        let r = if hdr.is_null() {
            Err(EMSGSIZE)
        } else {
            // SAFETY: `skb` is owned here, with a header put.
            f(&mut unsafe { Msg::from_raw(skb) })
        };
        match r {
            Ok(()) => {
                // SAFETY: The message is complete; `genlmsg_reply` takes `skb`.
                unsafe {
                    bindings::genlmsg_end(skb, hdr);
                    kernel::error::to_result(b::foresight_genl_reply(skb, self.raw()))
                }
            }
            Err(e) => {
                // SAFETY: `skb` is owned and not sent.
                unsafe { bindings::nlmsg_free(skb) };
                Err(e)
            }
        }
    }
}

/// The attributes of one nested attribute, policy-checked.
pub struct Nested<'a> {
    tb: *mut *mut bindings::nlattr,
    maxattr: u32,
    _a: core::marker::PhantomData<&'a ()>,
}

impl Attrs for Nested<'_> {
    fn bytes(&self, attr: u32) -> Option<&[u8]> {
        if attr > self.maxattr {
            return None;
        }
        // SAFETY: `tb` has `maxattr + 1` entries filled by `nla_parse_nested`.
        unsafe { payload(self.tb, attr) }
    }
}

/// A `dump` call: its request attributes, its state across calls, and
/// room for reply messages.
///
/// # Invariants
///
/// `skb` and `cb` are the valid arguments of a generic netlink `dumpit` call
/// for `'a`; the dump info's `attrs` was filled by the operation's policy
/// (or is null, for a dump without one).
pub struct Dump<'a> {
    skb: NonNull<bindings::sk_buff>,
    cb: NonNull<bindings::netlink_callback>,
    maxattr: u32,
    _a: core::marker::PhantomData<&'a ()>,
}

impl Attrs for Dump<'_> {
    fn bytes(&self, attr: u32) -> Option<&[u8]> {
        // SAFETY: `cb` is a generic netlink dump (type invariant).
        let attrs = unsafe { b::foresight_genl_dump_attrs(self.cb.as_ptr()) };
        if attrs.is_null() || attr > self.maxattr {
            return None;
        }
        // SAFETY: `attrs` has `maxattr + 1` entries; `attr` is in bounds.
        unsafe { payload(attrs, attr) }
    }
}

/// Words of state a dump keeps between its calls.
const DUMP_STATE_WORDS: usize = 4;

impl<'a> Dump<'a> {
    /// # Safety
    ///
    /// `skb` and `cb` must be the arguments of a `dumpit` call whose policy has `maxattr`.
    pub(super) unsafe fn from_raw(
        skb: *mut bindings::sk_buff,
        cb: *mut bindings::netlink_callback,
        maxattr: u32,
    ) -> Self {
        Self {
            // SAFETY: The caller promises valid pointers.
            skb: unsafe { NonNull::new_unchecked(skb) },
            // SAFETY: As above.
            cb: unsafe { NonNull::new_unchecked(cb) },
            maxattr,
            _a: core::marker::PhantomData,
        }
    }

    /// State kept across the calls of this dump, zero at the first.
    pub fn state(&mut self) -> &mut [u64; DUMP_STATE_WORDS] {
        const _: () = assert!(
            DUMP_STATE_WORDS * 8 <= bindings::NETLINK_CTX_SIZE as usize,
            "dump state must fit the callback context"
        );
        // SAFETY: `cb->ctx` is `NETLINK_CTX_SIZE` bytes, 8-byte aligned (it follows pointers and
        // longs), zeroed when the dump starts, and owned by this dump; it is large enough
        // (checked above).
        unsafe {
            &mut *b::foresight_genl_dump_ctx(self.cb.as_ptr()).cast::<[u64; DUMP_STATE_WORDS]>()
        }
    }

    /// Sets the extended ack of a failure.
    pub(super) fn set_error(&self, failure: &Failure) {
        // SAFETY: `cb` is valid; the message is a static C string.
        unsafe {
            b::foresight_genl_dump_set_err(
                self.cb.as_ptr(),
                failure.message.as_char_ptr(),
                failure.attr as c_int,
            )
        };
    }

    /// Adds one reply message of command `cmd` with the attributes `f`
    /// puts.  `Ok(false)`: the buffer is full (nothing of this message is
    /// kept); the dump continues in its next call.
    pub fn message(&mut self, cmd: u8, f: impl FnOnce(&mut Msg<'_>) -> Result) -> Result<bool> {
        let skb = self.skb.as_ptr();
        // SAFETY: `skb` and `cb` are the dump's (type invariant).
        let hdr = unsafe { b::foresight_genl_put_dump(skb, self.cb.as_ptr(), cmd) };
        if hdr.is_null() {
            return Ok(false);
        }
        // SAFETY: `skb` has a header put and is the dump's buffer for `'a`.
        match f(&mut unsafe { Msg::from_raw(skb) }) {
            Ok(()) => {
                // SAFETY: `hdr` is this message's header in `skb`.
                unsafe { bindings::genlmsg_end(skb, hdr) };
                Ok(true)
            }
            Err(e) if e == EMSGSIZE => {
                // SAFETY: As above; removes the partial message.
                unsafe { bindings::genlmsg_cancel(skb, hdr) };
                Ok(false)
            }
            Err(e) => {
                // SAFETY: As above.
                unsafe { bindings::genlmsg_cancel(skb, hdr) };
                Err(e)
            }
        }
    }

    /// Adds one reply message of command `cmd`, letting `f` fill it as far
    /// as it fits: `f` returns whether it put everything it had.  The
    /// message is kept if it holds anything `f` put; returns `f`'s answer,
    /// or `Ok(false)` with nothing kept if not even the start fit.
    pub fn partial_message(
        &mut self,
        cmd: u8,
        f: impl FnOnce(&mut Msg<'_>) -> Result<bool>,
    ) -> Result<Option<bool>> {
        let skb = self.skb.as_ptr();
        // SAFETY: `skb` and `cb` are the dump's (type invariant).
        let hdr = unsafe { b::foresight_genl_put_dump(skb, self.cb.as_ptr(), cmd) };
        if hdr.is_null() {
            return Ok(None);
        }
        // SAFETY: `skb` has a header put and is the dump's buffer for `'a`.
        match f(&mut unsafe { Msg::from_raw(skb) }) {
            Ok(done) => {
                // SAFETY: `hdr` is this message's header in `skb`.
                unsafe { bindings::genlmsg_end(skb, hdr) };
                Ok(Some(done))
            }
            Err(e) => {
                // SAFETY: As above; removes the partial message.
                unsafe { bindings::genlmsg_cancel(skb, hdr) };
                if e == EMSGSIZE {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}
