// SPDX-License-Identifier: GPL-2.0

//! The handlers the generated operation table (`rust/netlink/foresight-nl.c`)
//! calls: each wraps its arguments in a [`Request`] or [`Dump`] and hands
//! them to the registered [`Operations`](super::Operations).

use super::{
    handlers,
    Dump,
    Failure,
    Request, //
};
use crate::dm::bindings as b;
use kernel::{
    bindings::{
        genl_info,
        genl_split_ops,
        netlink_callback,
        sk_buff, //
    },
    prelude::*,
};

fn done_do(req: &Request<'_>, r: Result<(), Failure>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(f) => {
            req.set_error(&f);
            f.code.to_errno()
        }
    }
}

/// A dump call returns the skb's length while it has more, 0 when done.
fn done_dump(dump: &Dump<'_>, skb: *mut sk_buff, r: Result<bool, Failure>) -> c_int {
    match r {
        // SAFETY: `skb` is the dump's buffer, valid during the call.
        Ok(false) => unsafe { (*skb).len as c_int },
        Ok(true) => 0,
        Err(f) => {
            dump.set_error(&f);
            f.code.to_errno()
        }
    }
}

/// No operations are registered (the family is not: genetlink calls none).
const UNREGISTERED: Failure = Failure {
    code: ENODEV,
    message: c"foresight: no operations registered",
    attr: 0,
};

/// Every operation needs device-mapper's privilege: CAP_SYS_ADMIN in the
/// initial user namespace.
const DENIED: Failure = Failure {
    code: EPERM,
    message: c"foresight needs CAP_SYS_ADMIN in the initial user namespace",
    attr: 0,
};

/// Whether the sender of `skb` holds CAP_SYS_ADMIN in the initial user
/// namespace, both the task and the opener of its socket (what `ioctl`s on
/// `/dev/mapper/control` ask, plus the socket: a descriptor passed to a
/// privileged process grants nothing).
///
/// # Safety
///
/// `skb` must be a netlink request being received.
unsafe fn privileged(skb: *const sk_buff) -> bool {
    // SAFETY: The caller promises a received netlink skb.
    unsafe { kernel::bindings::netlink_capable(skb, kernel::bindings::CAP_SYS_ADMIN as c_int) }
}

#[no_mangle]
extern "C" fn foresight_nl_pre_doit(
    _ops: *const genl_split_ops,
    skb: *mut sk_buff,
    info: *mut genl_info,
) -> c_int {
    // SAFETY: Called by genetlink before a `doit`, with the request being received.
    if unsafe { privileged(skb) } {
        return 0;
    }
    // SAFETY: As above; no attribute is read (`maxattr` 0).
    let req = unsafe { Request::from_raw(info, 0) };
    done_do(&req, Err(DENIED))
}

#[no_mangle]
extern "C" fn foresight_nl_pre_dumpit(cb: *mut netlink_callback) -> c_int {
    // SAFETY: Called by genetlink as a dump's `start`, with `cb` and its request valid.
    if unsafe { privileged((*cb).skb) } {
        return 0;
    }
    // SAFETY: As above; `cb->skb` is the request, not a reply buffer, but only the
    // error is set (no attribute is read or message added).
    let dump = unsafe { Dump::from_raw((*cb).skb, cb, 0) };
    dump.set_error(&DENIED);
    DENIED.code.to_errno()
}

#[no_mangle]
extern "C" fn foresight_nl_dev_get_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `DEV_DEV`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_DEV_DEV) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.dev_get)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_dev_get_dumpit(skb: *mut sk_buff, cb: *mut netlink_callback) -> c_int {
    // SAFETY: Called by genetlink for this op, which has no request policy.
    let mut dump = unsafe { Dump::from_raw(skb, cb, 0) };
    let r = handlers().map_or(Err(UNREGISTERED), |h| (h.dev_dump)(&mut dump));
    done_dump(&dump, skb, r)
}

#[no_mangle]
extern "C" fn foresight_nl_dirty_get_dumpit(skb: *mut sk_buff, cb: *mut netlink_callback) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `DIRTY_EPOCH`.
    let mut dump = unsafe { Dump::from_raw(skb, cb, b::FORESIGHT_A_DIRTY_EPOCH) };
    let r = handlers().map_or(Err(UNREGISTERED), |h| (h.dirty_dump)(&mut dump));
    done_dump(&dump, skb, r)
}

#[no_mangle]
extern "C" fn foresight_nl_dirty_rotate_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `DIRTY_FORCE`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_DIRTY_FORCE) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.dirty_rotate)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_predict_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `PREDICT_RANGE`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_PREDICT_RANGE) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.predict)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_policy_set_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `POLICY_WRITE_KBPS`
    // (`.maxattr` of this op in the generated table).
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_POLICY_WRITE_KBPS) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.policy_set)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_shadow_get_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `SHADOW_DEV`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_SHADOW_DEV) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.shadow_get)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_shadow_get_dumpit(
    skb: *mut sk_buff,
    cb: *mut netlink_callback,
) -> c_int {
    // SAFETY: Called by genetlink for this op, which has no request policy.
    let mut dump = unsafe { Dump::from_raw(skb, cb, 0) };
    let r = handlers().map_or(Err(UNREGISTERED), |h| (h.shadow_dump)(&mut dump));
    done_dump(&dump, skb, r)
}

#[no_mangle]
extern "C" fn foresight_nl_shadow_hint_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `SHADOW_RANGE`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_SHADOW_RANGE) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.shadow_hint)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_budget_get_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, which has no request policy.
    let req = unsafe { Request::from_raw(info, 0) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.budget_get)(&req)),
    )
}

#[no_mangle]
extern "C" fn foresight_nl_budget_set_doit(_skb: *mut sk_buff, info: *mut genl_info) -> c_int {
    // SAFETY: Called by genetlink for this op, whose policy ends at `BUDGET_BANDWIDTH_TOTAL_KBPS`.
    let req = unsafe { Request::from_raw(info, b::FORESIGHT_A_BUDGET_BANDWIDTH_TOTAL_KBPS) };
    done_do(
        &req,
        handlers().map_or(Err(UNREGISTERED), |h| (h.budget_set)(&req)),
    )
}

/// The nested policy of a predicted range (generated).
pub fn range_policy() -> &'static [kernel::bindings::nla_policy] {
    // SAFETY: The generated policy is an immutable static array.
    unsafe { &b::foresight_range_nl_policy }
}

/// A socket joins one of the family's multicast groups.
pub(super) extern "C" fn bind(group: c_int) -> c_int {
    if let Some(joined) = handlers().and_then(|h| h.group_joined) {
        joined(group as u32);
    }
    0
}
