// SPDX-License-Identifier: GPL-2.0

//! The `foresight` generic netlink family, in safe Rust.
//!
//! C header: [`include/net/genetlink.h`](srctree/include/net/genetlink.h)
//!
//! The family, its operations and their attribute policies are C, generated
//! from `Documentation/netlink/specs/foresight.yaml` by the kernel's ynl
//! generator (`rust/netlink/`); the kernel validates every request against
//! those policies before a handler runs.  This layer owns the `unsafe` of
//! netlink: the handlers the generated table names (`ops.rs`) hand feature
//! code a [`Request`] or a [`Dump`], and messages are built with [`Msg`].
//! Attribute ids and enums are the generated uAPI header's (see [`uapi`]).

mod msg;
mod ops;
mod request;

pub use msg::{
    Msg,
    Multicast, //
};
pub use ops::range_policy;
pub use request::{
    Attrs,
    Dump,
    Failure,
    Nested,
    Request, //
};

use crate::{
    dm::bindings as b,
    foresight::Shared, //
};
use core::sync::atomic::{
    AtomicBool,
    Ordering::Relaxed, //
};
use kernel::{
    error::to_result,
    ffi::{
        c_ulong,
        c_void, //
    },
    prelude::*,
    types::Opaque,
    sync::{
        Arc,
        GlobalGuard, //
    },
};

/// The uAPI of the family, as generated from its spec.
pub mod uapi {
    pub use crate::dm::bindings::{
        FORESIGHT_MAX_RANGES as MAX_RANGES,
        FORESIGHT_NAME_LEN as NAME_LEN,
        FORESIGHT_PROBABILITY_ONE as PROBABILITY_ONE, //
    };

    /// Commands.
    pub mod cmd {
        use crate::dm::bindings as b;
        /// `dev-get`.
        pub const DEV_GET: u8 = b::FORESIGHT_CMD_DEV_GET as u8;
        /// `dirty-get`.
        pub const DIRTY_GET: u8 = b::FORESIGHT_CMD_DIRTY_GET as u8;
        /// `dirty-rotate`.
        pub const DIRTY_ROTATE: u8 = b::FORESIGHT_CMD_DIRTY_ROTATE as u8;
        /// `predict`.
        pub const PREDICT: u8 = b::FORESIGHT_CMD_PREDICT as u8;
        /// `trace-ntf`.
        pub const TRACE_NTF: u8 = b::FORESIGHT_CMD_TRACE_NTF as u8;
    }

    /// Attributes of each set.
    pub mod attr {
        pub use crate::dm::bindings::{
            FORESIGHT_A_DEV_ADAPTIVE as DEV_ADAPTIVE,
            FORESIGHT_A_DEV_CACHE_BYTES as DEV_CACHE_BYTES,
            FORESIGHT_A_DEV_CACHE_CAPACITY as DEV_CACHE_CAPACITY,
            FORESIGHT_A_DEV_CACHE_HITS as DEV_CACHE_HITS,
            FORESIGHT_A_DEV_CACHE_MISSES as DEV_CACHE_MISSES,
            FORESIGHT_A_DEV_CACHE_PARTIAL as DEV_CACHE_PARTIAL,
            FORESIGHT_A_DEV_PREFETCH_ERRORS as DEV_PREFETCH_ERRORS,
            FORESIGHT_A_DEV_PREFETCH_INFLIGHT as DEV_PREFETCH_INFLIGHT,
            FORESIGHT_A_DEV_PREFETCH_QUEUED as DEV_PREFETCH_QUEUED,
            FORESIGHT_A_DEV_PREFETCH_STALE as DEV_PREFETCH_STALE,
            FORESIGHT_A_DEV_TIER as DEV_TIER,
            FORESIGHT_A_DEV_VERIFY_MISMATCH as DEV_VERIFY_MISMATCH,
            FORESIGHT_A_POLICY_CACHE_MB as POLICY_CACHE_MB,
            FORESIGHT_A_POLICY_CRITICAL_PPM as POLICY_CRITICAL_PPM,
            FORESIGHT_A_POLICY_IDLE_MS as POLICY_IDLE_MS,
            FORESIGHT_A_POLICY_LOAD_LIMIT as POLICY_LOAD_LIMIT,
            FORESIGHT_A_POLICY_MIN_PPM as POLICY_MIN_PPM,
            FORESIGHT_A_POLICY_PREDICTIVE_PPM as POLICY_PREDICTIVE_PPM,
            FORESIGHT_A_POLICY_PREFETCH_INFLIGHT as POLICY_PREFETCH_INFLIGHT,
            FORESIGHT_A_POLICY_PREFETCH_KBPS as POLICY_PREFETCH_KBPS,
            FORESIGHT_A_TIER_STATS_COMPLETED as TIER_STATS_COMPLETED,
            FORESIGHT_A_TIER_STATS_ISSUED as TIER_STATS_ISSUED,
            FORESIGHT_A_TIER_STATS_TIER as TIER_STATS_TIER,
            FORESIGHT_A_TIER_STATS_USED as TIER_STATS_USED,
            FORESIGHT_A_TIER_STATS_WASTED as TIER_STATS_WASTED,
            FORESIGHT_A_DEV_COARSE_FALLBACKS as DEV_COARSE_FALLBACKS,
            FORESIGHT_A_DEV_DEGRADED as DEV_DEGRADED,
            FORESIGHT_A_DEV_DEV as DEV_DEV,
            FORESIGHT_A_DEV_DIRTY_BYTES as DEV_DIRTY_BYTES,
            FORESIGHT_A_DEV_DISCARD_BIOS as DEV_DISCARD_BIOS,
            FORESIGHT_A_DEV_DISCARD_SECTORS as DEV_DISCARD_SECTORS,
            FORESIGHT_A_DEV_EPOCH as DEV_EPOCH,
            FORESIGHT_A_DEV_ERRORS as DEV_ERRORS,
            FORESIGHT_A_DEV_FLUSH_BIOS as DEV_FLUSH_BIOS,
            FORESIGHT_A_DEV_GRAIN_BYTES as DEV_GRAIN_BYTES,
            FORESIGHT_A_DEV_LEVEL as DEV_LEVEL,
            FORESIGHT_A_DEV_LOG_MEMORY as DEV_LOG_MEMORY,
            FORESIGHT_A_DEV_LOG_STATE as DEV_LOG_STATE,
            FORESIGHT_A_DEV_NAME as DEV_NAME,
            FORESIGHT_A_DEV_ORIGIN as DEV_ORIGIN,
            FORESIGHT_A_DEV_ORIGIN_SECTORS as DEV_ORIGIN_SECTORS,
            FORESIGHT_A_DEV_PREDICT_RANGES as DEV_PREDICT_RANGES,
            FORESIGHT_A_DEV_PREV_DIRTY_BYTES as DEV_PREV_DIRTY_BYTES,
            FORESIGHT_A_DEV_PREV_STATE as DEV_PREV_STATE,
            FORESIGHT_A_DEV_READ_BIOS as DEV_READ_BIOS,
            FORESIGHT_A_DEV_READ_SECTORS as DEV_READ_SECTORS,
            FORESIGHT_A_DEV_ROTATE_OWNER as DEV_ROTATE_OWNER,
            FORESIGHT_A_DEV_SECTORS as DEV_SECTORS,
            FORESIGHT_A_DEV_TRACE_DROPPED as DEV_TRACE_DROPPED,
            FORESIGHT_A_DEV_TRACE_RECORDS as DEV_TRACE_RECORDS,
            FORESIGHT_A_DEV_WRITE_BIOS as DEV_WRITE_BIOS,
            FORESIGHT_A_DEV_WRITE_SECTORS as DEV_WRITE_SECTORS,
            FORESIGHT_A_DIRTY_CLAIM as DIRTY_CLAIM,
            FORESIGHT_A_DIRTY_DEV as DIRTY_DEV,
            FORESIGHT_A_DIRTY_EPOCH as DIRTY_EPOCH,
            FORESIGHT_A_DIRTY_EPOCH_NUMBER as DIRTY_EPOCH_NUMBER,
            FORESIGHT_A_DIRTY_EXPECT_EPOCH as DIRTY_EXPECT_EPOCH,
            FORESIGHT_A_DIRTY_EXTENT as DIRTY_EXTENT,
            FORESIGHT_A_DIRTY_FORCE as DIRTY_FORCE,
            FORESIGHT_A_DIRTY_NAME as DIRTY_NAME,
            FORESIGHT_A_DIRTY_STATE as DIRTY_STATE,
            FORESIGHT_A_EXTENT_LENGTH as EXTENT_LENGTH,
            FORESIGHT_A_EXTENT_START as EXTENT_START,
            FORESIGHT_A_POLICY_ADAPTIVE as POLICY_ADAPTIVE,
            FORESIGHT_A_POLICY_BASE as POLICY_BASE,
            FORESIGHT_A_POLICY_DENSE_PCT as POLICY_DENSE_PCT,
            FORESIGHT_A_POLICY_DEV as POLICY_DEV,
            FORESIGHT_A_POLICY_HYSTERESIS as POLICY_HYSTERESIS,
            FORESIGHT_A_POLICY_INTERVAL_MS as POLICY_INTERVAL_MS,
            FORESIGHT_A_POLICY_LEVEL as POLICY_LEVEL,
            FORESIGHT_A_POLICY_MAX_LEVEL as POLICY_MAX_LEVEL,
            FORESIGHT_A_POLICY_MAX_MEMORY_KB as POLICY_MAX_MEMORY_KB,
            FORESIGHT_A_POLICY_MIN_LEVEL as POLICY_MIN_LEVEL,
            FORESIGHT_A_POLICY_NAME as POLICY_NAME,
            FORESIGHT_A_POLICY_PREDICT_TTL as POLICY_PREDICT_TTL,
            FORESIGHT_A_POLICY_TRACE_RATE as POLICY_TRACE_RATE,
            FORESIGHT_A_POLICY_W_DIRTY as POLICY_W_DIRTY,
            FORESIGHT_A_POLICY_W_IO as POLICY_W_IO,
            FORESIGHT_A_PREDICT_ACCEPTED as PREDICT_ACCEPTED,
            FORESIGHT_A_PREDICT_DEV as PREDICT_DEV,
            FORESIGHT_A_PREDICT_HORIZON_MS as PREDICT_HORIZON_MS,
            FORESIGHT_A_PREDICT_KIND as PREDICT_KIND,
            FORESIGHT_A_PREDICT_NAME as PREDICT_NAME,
            FORESIGHT_A_PREDICT_RANGE as PREDICT_RANGE,
            FORESIGHT_A_RANGE_LENGTH as RANGE_LENGTH,
            FORESIGHT_A_RANGE_PROBABILITY as RANGE_PROBABILITY,
            FORESIGHT_A_RANGE_START as RANGE_START,
            FORESIGHT_A_TRACE_DEV as TRACE_DEV,
            FORESIGHT_A_TRACE_DROPPED as TRACE_DROPPED,
            FORESIGHT_A_TRACE_NAME as TRACE_NAME,
            FORESIGHT_A_TRACE_RECORDS as TRACE_RECORDS, //
        };
    }

    /// Multicast groups.
    pub const GROUP_TRACE: u32 = crate::dm::bindings::FORESIGHT_NLGRP_TRACE;
}

kernel::sync::global_lock! {
    // SAFETY: Initialised by `Registration::new`, in module init, before first use.
    /// The foresight devices netlink can reach.
    pub(crate) unsafe(uninit) static DEVICES: Mutex<KVec<Arc<Shared>>> = KVec::new();
}

static DEVICES_READY: AtomicBool = AtomicBool::new(false);

/// The devices netlink can reach, locked.  Operations run with it held, so
/// a device removed (taken out under this lock) is not used afterwards.
pub(crate) fn devices() -> GlobalGuard<DEVICES> {
    DEVICES.lock()
}

/// `GENL_MCAST_CAP_SYS_ADMIN` (`BIT(1)`, which bindgen does not evaluate).
const MCAST_CAP_SYS_ADMIN: u8 = 1 << 1;

/// A multicast group named `name`, joined only with CAP_SYS_ADMIN.
const fn admin_group(name: &[u8]) -> kernel::bindings::genl_multicast_group {
    let mut g = kernel::bindings::genl_multicast_group {
        name: [0; 16],
        flags: MCAST_CAP_SYS_ADMIN,
    };
    let mut i = 0;
    // One byte short of the array: the name stays NUL-terminated.
    while i < name.len() && i < g.name.len() - 1 {
        g.name[i] = name[i] as c_char;
        i += 1;
    }
    g
}

/// The generated multicast groups (checked at registration to be these, in
/// this order), with the flag the spec cannot carry: joining the trace
/// group needs CAP_SYS_ADMIN in the initial user namespace.
static MCGRPS: [kernel::bindings::genl_multicast_group; 1] = [admin_group(b"trace")];

/// What the family tells feature code about its callers' sockets.
pub trait Sockets {
    /// The netlink socket of port id `port` (in the initial network
    /// namespace) closed.  Called in process context.
    fn closed(port: u32);
}

/// The netlink notifier's callback: a socket released.
extern "C" fn released<S: Sockets>(
    _nb: *mut kernel::bindings::notifier_block,
    event: c_ulong,
    ptr: *mut c_void,
) -> c_int {
    use kernel::bindings as kb;
    if event == kb::NETLINK_URELEASE as c_ulong {
        // SAFETY: For `NETLINK_URELEASE` the netlink chain passes a `netlink_notify`,
        // valid during the call.
        let n = unsafe { &*ptr.cast::<kb::netlink_notify>() };
        let init = core::ptr::eq(n.net, &raw const kb::init_net);
        if n.protocol == kb::NETLINK_GENERIC as c_int && init {
            S::closed(n.portid);
        }
    }
    kb::NOTIFY_DONE as c_int
}

/// The registered family, and the notifier that reports closed sockets;
/// both unregistered on drop.
pub struct Registration {
    notifier: Pin<KBox<Opaque<kernel::bindings::notifier_block>>>,
}

impl Registration {
    /// Registers the `foresight` family; `S` hears of closed sockets.
    pub fn new<S: Sockets>() -> Result<Self> {
        if !DEVICES_READY.swap(true, Relaxed) {
            // SAFETY: Once only (guarded by `DEVICES_READY`), before any use (devices are
            // registered by targets, which exist only once the module is initialised).
            unsafe { DEVICES.init() };
        }
        // SAFETY: `foresight_nl_family` is static; until it is registered nothing else uses it,
        // so setting its fields cannot race, and its groups are the generated static array
        // of `n_mcgrps` entries.  It is registered once here and unregistered once in `drop`.
        to_result(unsafe {
            let fam = &mut *family();
            let generated = core::slice::from_raw_parts(fam.mcgrps, fam.n_mcgrps as usize);
            if generated.len() != MCGRPS.len()
                || generated.iter().zip(&MCGRPS).any(|(g, m)| g.name != m.name)
            {
                return Err(EINVAL);
            }
            fam.mcgrps = MCGRPS.as_ptr();
            // Device-mapper devices belong to the host: the family is offered in the
            // initial network namespace only, whose user namespace the groups' flag is
            // checked in.
            fam.set_netnsok(0);
            fam.bind = Some(ops::bind);
            kernel::bindings::genl_register_family(fam)
        })?;
        let notifier = KBox::pin(
            Opaque::new(kernel::bindings::notifier_block {
                notifier_call: Some(released::<S>),
                next: core::ptr::null_mut(),
                priority: 0,
            }),
            GFP_KERNEL,
        );
        let notifier = match notifier {
            Ok(n) => n,
            Err(e) => {
                // SAFETY: Registered just above.
                unsafe { kernel::bindings::genl_unregister_family(family()) };
                return Err(e.into());
            }
        };
        // SAFETY: The block is pinned on the heap and unregistered in `drop` before it is
        // freed; the chain is a blocking one, so the callback runs in process context.
        let r = to_result(unsafe { kernel::bindings::netlink_register_notifier(notifier.get()) });
        if let Err(e) = r {
            // SAFETY: Registered just above.
            unsafe { kernel::bindings::genl_unregister_family(family()) };
            return Err(e);
        }
        Ok(Self { notifier })
    }
}

// SAFETY: The notifier block is only touched by the netlink notifier chain, under the
// chain's lock, and by `new` and `drop`, which have the registration to themselves.
unsafe impl Send for Registration {}

// SAFETY: `&Registration` gives no access to the notifier block.
unsafe impl Sync for Registration {}

impl Drop for Registration {
    fn drop(&mut self) {
        // No device is left (the target type is unregistered first); the
        // registry is a static, so its buffer is given back by hand.
        *devices() = KVec::new();
        // SAFETY: The family was registered in `new`.
        unsafe { kernel::bindings::genl_unregister_family(family()) };
        // SAFETY: Registered in `new`; once this returns no callback runs (the chain's
        // lock is taken for writing), so the block may be freed.
        unsafe { kernel::bindings::netlink_unregister_notifier(self.notifier.get()) };
    }
}

/// The generated family.
fn family() -> *mut kernel::bindings::genl_family {
    // Only the address is taken; the genetlink core owns the contents once registered.
    &raw mut b::foresight_nl_family
}

/// Whether anyone listens to multicast group `group` (in the initial network namespace,
/// where device-mapper devices live).
pub fn has_listeners(group: u32) -> bool {
    // SAFETY: The family is static and `init_net` lives forever.
    unsafe {
        kernel::bindings::genl_has_listeners(family(), &raw mut kernel::bindings::init_net, group)
            != 0
    }
}
