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

mod lookup;
mod msg;
mod ops;
mod registry;
mod request;

pub use lookup::{
    dump_in_order,
    find,
    name_of,
    next_from,
    ranges,
    Entry,
    Name,
    NotFound, //
};
pub use msg::{
    Msg,
    Multicast, //
};
pub use ops::range_policy;
pub use registry::{
    Locked,
    Registries,
    Registry, //
};
pub use request::{
    Attrs,
    Dump,
    Failure,
    Nested,
    Request, //
};

use crate::dm::bindings as b;
use kernel::{
    error::{
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    ffi::{
        c_ulong,
        c_void, //
    },
    prelude::*,
    sync::SetOnce,
    types::Opaque,
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
        /// `shadow-get`.
        pub const SHADOW_GET: u8 = b::FORESIGHT_CMD_SHADOW_GET as u8;
        /// `shadow-hint`.
        pub const SHADOW_HINT: u8 = b::FORESIGHT_CMD_SHADOW_HINT as u8;
        /// `budget-get`.
        pub const BUDGET_GET: u8 = b::FORESIGHT_CMD_BUDGET_GET as u8;
    }

    /// `enum foresight_shadow_state`.
    pub mod shadow_state {
        pub use crate::dm::bindings::{
            foresight_shadow_state_FORESIGHT_SHADOW_STATE_BACKOFF as BACKOFF,
            foresight_shadow_state_FORESIGHT_SHADOW_STATE_COMPLETE as COMPLETE,
            foresight_shadow_state_FORESIGHT_SHADOW_STATE_HYDRATING as HYDRATING,
            foresight_shadow_state_FORESIGHT_SHADOW_STATE_IDLE as IDLE,
            foresight_shadow_state_FORESIGHT_SHADOW_STATE_STOPPED as STOPPED, //
        };
    }

    /// Attributes of each set.
    pub mod attr {
        pub use crate::dm::bindings::{
            FORESIGHT_A_BUDGET_BANDWIDTH_CHARGED_KBPS as BUDGET_BANDWIDTH_CHARGED_KBPS,
            FORESIGHT_A_BUDGET_BANDWIDTH_TOTAL_KBPS as BUDGET_BANDWIDTH_TOTAL_KBPS,
            FORESIGHT_A_BUDGET_CACHE_CHARGED_MB as BUDGET_CACHE_CHARGED_MB,
            FORESIGHT_A_BUDGET_CACHE_TOTAL_MB as BUDGET_CACHE_TOTAL_MB,
            FORESIGHT_A_BUDGET_DEVICES as BUDGET_DEVICES,
            FORESIGHT_A_BUDGET_UNLIMITED as BUDGET_UNLIMITED,
            FORESIGHT_A_DEV_ADAPTIVE as DEV_ADAPTIVE,
            FORESIGHT_A_DEV_CACHE_BYTES as DEV_CACHE_BYTES,
            FORESIGHT_A_DEV_CACHE_CAPACITY as DEV_CACHE_CAPACITY,
            FORESIGHT_A_DEV_CACHE_HITS as DEV_CACHE_HITS,
            FORESIGHT_A_DEV_CACHE_MISSES as DEV_CACHE_MISSES,
            FORESIGHT_A_DEV_CACHE_PARTIAL as DEV_CACHE_PARTIAL,
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
            FORESIGHT_A_DEV_PREFETCH_ERRORS as DEV_PREFETCH_ERRORS,
            FORESIGHT_A_DEV_PREFETCH_INFLIGHT as DEV_PREFETCH_INFLIGHT,
            FORESIGHT_A_DEV_PREFETCH_QUEUED as DEV_PREFETCH_QUEUED,
            FORESIGHT_A_DEV_PREFETCH_STALE as DEV_PREFETCH_STALE,
            FORESIGHT_A_DEV_PREV_DIRTY_BYTES as DEV_PREV_DIRTY_BYTES,
            FORESIGHT_A_DEV_PREV_STATE as DEV_PREV_STATE,
            FORESIGHT_A_DEV_READ_BIOS as DEV_READ_BIOS,
            FORESIGHT_A_DEV_READ_SECTORS as DEV_READ_SECTORS,
            FORESIGHT_A_DEV_ROTATE_OWNER as DEV_ROTATE_OWNER,
            FORESIGHT_A_DEV_SECTORS as DEV_SECTORS,
            FORESIGHT_A_DEV_TIER as DEV_TIER,
            FORESIGHT_A_DEV_TRACE_DROPPED as DEV_TRACE_DROPPED,
            FORESIGHT_A_DEV_TRACE_RECORDS as DEV_TRACE_RECORDS,
            FORESIGHT_A_DEV_VERIFY_MISMATCH as DEV_VERIFY_MISMATCH,
            FORESIGHT_A_DEV_WRITE_BIOS as DEV_WRITE_BIOS,
            FORESIGHT_A_DEV_WRITE_DELAYED as DEV_WRITE_DELAYED,
            FORESIGHT_A_DEV_WRITE_DELAYED_BYTES as DEV_WRITE_DELAYED_BYTES,
            FORESIGHT_A_DEV_WRITE_KBPS as DEV_WRITE_KBPS,
            FORESIGHT_A_DEV_WRITE_SECTORS as DEV_WRITE_SECTORS,
            FORESIGHT_A_DEV_WRITE_WAITING as DEV_WRITE_WAITING,
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
            FORESIGHT_A_POLICY_CACHE_MB as POLICY_CACHE_MB,
            FORESIGHT_A_POLICY_CRITICAL_PPM as POLICY_CRITICAL_PPM,
            FORESIGHT_A_POLICY_DENSE_PCT as POLICY_DENSE_PCT,
            FORESIGHT_A_POLICY_DEV as POLICY_DEV,
            FORESIGHT_A_POLICY_HYSTERESIS as POLICY_HYSTERESIS,
            FORESIGHT_A_POLICY_IDLE_MS as POLICY_IDLE_MS,
            FORESIGHT_A_POLICY_INTERVAL_MS as POLICY_INTERVAL_MS,
            FORESIGHT_A_POLICY_LEVEL as POLICY_LEVEL,
            FORESIGHT_A_POLICY_LOAD_LIMIT as POLICY_LOAD_LIMIT,
            FORESIGHT_A_POLICY_MAX_LEVEL as POLICY_MAX_LEVEL,
            FORESIGHT_A_POLICY_MAX_MEMORY_KB as POLICY_MAX_MEMORY_KB,
            FORESIGHT_A_POLICY_MIN_LEVEL as POLICY_MIN_LEVEL,
            FORESIGHT_A_POLICY_MIN_PPM as POLICY_MIN_PPM,
            FORESIGHT_A_POLICY_NAME as POLICY_NAME,
            FORESIGHT_A_POLICY_PREDICTIVE_PPM as POLICY_PREDICTIVE_PPM,
            FORESIGHT_A_POLICY_PREDICT_TTL as POLICY_PREDICT_TTL,
            FORESIGHT_A_POLICY_PREFETCH_INFLIGHT as POLICY_PREFETCH_INFLIGHT,
            FORESIGHT_A_POLICY_PREFETCH_KBPS as POLICY_PREFETCH_KBPS,
            FORESIGHT_A_POLICY_TRACE_RATE as POLICY_TRACE_RATE,
            FORESIGHT_A_POLICY_WRITE_KBPS as POLICY_WRITE_KBPS,
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
            FORESIGHT_A_SHADOW_ACCEPTED as SHADOW_ACCEPTED,
            FORESIGHT_A_SHADOW_ASCENDING as SHADOW_ASCENDING,
            FORESIGHT_A_SHADOW_COMMIT_ERRORS as SHADOW_COMMIT_ERRORS,
            FORESIGHT_A_SHADOW_COPIED_BYTES as SHADOW_COPIED_BYTES,
            FORESIGHT_A_SHADOW_COPYING as SHADOW_COPYING,
            FORESIGHT_A_SHADOW_COPY_ERRORS as SHADOW_COPY_ERRORS,
            FORESIGHT_A_SHADOW_CRC_MISMATCHES as SHADOW_CRC_MISMATCHES,
            FORESIGHT_A_SHADOW_DESTINATION as SHADOW_DESTINATION,
            FORESIGHT_A_SHADOW_DEV as SHADOW_DEV,
            FORESIGHT_A_SHADOW_HINTS as SHADOW_HINTS,
            FORESIGHT_A_SHADOW_HYDRATED as SHADOW_HYDRATED,
            FORESIGHT_A_SHADOW_MARKED as SHADOW_MARKED,
            FORESIGHT_A_SHADOW_NAME as SHADOW_NAME,
            FORESIGHT_A_SHADOW_OVERWRITTEN as SHADOW_OVERWRITTEN,
            FORESIGHT_A_SHADOW_PREDICTED as SHADOW_PREDICTED,
            FORESIGHT_A_SHADOW_RANGE as SHADOW_RANGE,
            FORESIGHT_A_SHADOW_RATE_KBPS as SHADOW_RATE_KBPS,
            FORESIGHT_A_SHADOW_READS_DEST as SHADOW_READS_DEST,
            FORESIGHT_A_SHADOW_READS_SOURCE as SHADOW_READS_SOURCE,
            FORESIGHT_A_SHADOW_REGIONS as SHADOW_REGIONS,
            FORESIGHT_A_SHADOW_REGION_SECTORS as SHADOW_REGION_SECTORS,
            FORESIGHT_A_SHADOW_SECTORS as SHADOW_SECTORS,
            FORESIGHT_A_SHADOW_SOURCE as SHADOW_SOURCE,
            FORESIGHT_A_SHADOW_STATE as SHADOW_STATE,
            FORESIGHT_A_SHADOW_URGENT as SHADOW_URGENT,
            FORESIGHT_A_SHADOW_WAITING_WRITES as SHADOW_WAITING_WRITES,
            FORESIGHT_A_TIER_STATS_COMPLETED as TIER_STATS_COMPLETED,
            FORESIGHT_A_TIER_STATS_ISSUED as TIER_STATS_ISSUED,
            FORESIGHT_A_TIER_STATS_TIER as TIER_STATS_TIER,
            FORESIGHT_A_TIER_STATS_USED as TIER_STATS_USED,
            FORESIGHT_A_TIER_STATS_WASTED as TIER_STATS_WASTED,
            FORESIGHT_A_TRACE_DEV as TRACE_DEV,
            FORESIGHT_A_TRACE_DROPPED as TRACE_DROPPED,
            FORESIGHT_A_TRACE_NAME as TRACE_NAME,
            FORESIGHT_A_TRACE_RECORDS as TRACE_RECORDS, //
        };
    }

    /// Multicast groups.
    pub const GROUP_TRACE: u32 = crate::dm::bindings::FORESIGHT_NLGRP_TRACE;
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

/// The family's operations, as feature code implements them
/// (`Documentation/netlink/specs/foresight.yaml`).  Each runs in process
/// context, after genetlink has validated the request against the
/// operation's policy and the caller's privilege.
#[vtable]
pub trait Operations {
    /// `dev-get` (do).
    fn dev_get(req: &Request<'_>) -> Result<(), Failure>;
    /// `dev-get` (dump): `Ok(true)` when done, `Ok(false)` while more is to come.
    fn dev_dump(dump: &mut Dump<'_>) -> Result<bool, Failure>;
    /// `dirty-get` (dump), as [`Operations::dev_dump`].
    fn dirty_dump(dump: &mut Dump<'_>) -> Result<bool, Failure>;
    /// `dirty-rotate` (do).
    fn dirty_rotate(req: &Request<'_>) -> Result<(), Failure>;
    /// `predict` (do).
    fn predict(req: &Request<'_>) -> Result<(), Failure>;
    /// `policy-set` (do).
    fn policy_set(req: &Request<'_>) -> Result<(), Failure>;
    /// `shadow-get` (do).
    fn shadow_get(req: &Request<'_>) -> Result<(), Failure>;
    /// `shadow-get` (dump), as [`Operations::dev_dump`].
    fn shadow_dump(dump: &mut Dump<'_>) -> Result<bool, Failure>;
    /// `shadow-hint` (do).
    fn shadow_hint(req: &Request<'_>) -> Result<(), Failure>;
    /// `budget-get` (do).
    fn budget_get(req: &Request<'_>) -> Result<(), Failure>;
    /// `budget-set` (do).
    fn budget_set(req: &Request<'_>) -> Result<(), Failure>;

    /// A socket joined multicast group `group` (see [`uapi::GROUP_TRACE`]).
    fn group_joined(_group: u32) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The netlink socket of port id `port` (in the initial network
    /// namespace) closed.  Called in process context.
    fn socket_closed(_port: u32) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The handlers of the registered [`Operations`], for the C entry points
/// the generated operation table names (`ops.rs`).
struct Handlers {
    dev_get: fn(&Request<'_>) -> Result<(), Failure>,
    dev_dump: fn(&mut Dump<'_>) -> Result<bool, Failure>,
    dirty_dump: fn(&mut Dump<'_>) -> Result<bool, Failure>,
    dirty_rotate: fn(&Request<'_>) -> Result<(), Failure>,
    predict: fn(&Request<'_>) -> Result<(), Failure>,
    policy_set: fn(&Request<'_>) -> Result<(), Failure>,
    shadow_get: fn(&Request<'_>) -> Result<(), Failure>,
    shadow_dump: fn(&mut Dump<'_>) -> Result<bool, Failure>,
    shadow_hint: fn(&Request<'_>) -> Result<(), Failure>,
    budget_get: fn(&Request<'_>) -> Result<(), Failure>,
    budget_set: fn(&Request<'_>) -> Result<(), Failure>,
    group_joined: Option<fn(u32)>,
}

struct HandlersOf<T>(core::marker::PhantomData<T>);

impl<T: Operations> HandlersOf<T> {
    const TABLE: Handlers = Handlers {
        dev_get: T::dev_get,
        dev_dump: T::dev_dump,
        dirty_dump: T::dirty_dump,
        dirty_rotate: T::dirty_rotate,
        predict: T::predict,
        policy_set: T::policy_set,
        shadow_get: T::shadow_get,
        shadow_dump: T::shadow_dump,
        shadow_hint: T::shadow_hint,
        budget_get: T::budget_get,
        budget_set: T::budget_set,
        group_joined: if T::HAS_GROUP_JOINED {
            Some(T::group_joined)
        } else {
            None
        },
    };
}

/// Set once, when the family is first registered (the family is a static
/// of the generated C: there is one).
static HANDLERS: SetOnce<&'static Handlers> = SetOnce::new();

/// The registered handlers: `None` only before registration.
fn handlers() -> Option<&'static Handlers> {
    HANDLERS.as_ref().copied()
}

/// The netlink notifier's callback: a socket released.
extern "C" fn released<T: Operations>(
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
            T::socket_closed(n.portid);
        }
    }
    kb::NOTIFY_DONE as c_int
}

/// The registered family, the notifier that reports closed sockets (when
/// the operations want them), and the lists of the registries the
/// operations reach; all given up on drop.
pub struct Registration<R: Registries> {
    notifier: Option<Pin<KBox<Opaque<kernel::bindings::notifier_block>>>>,
    _registries: R::Attached,
}

impl<R: Registries> Registration<R> {
    /// Registers the `foresight` family with operations `T`, which reach
    /// their devices through `registries` (one, or a tuple).  `EBUSY` if
    /// the family or a registry is taken.
    pub fn new<T: Operations>(registries: R) -> Result<Self> {
        if !HANDLERS.populate(&HandlersOf::<T>::TABLE) {
            return Err(EBUSY);
        }
        let registries = registries.attach()?;
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
        let notifier = if T::HAS_SOCKET_CLOSED {
            match Self::notify_closed::<T>() {
                Ok(n) => Some(n),
                Err(e) => {
                    // SAFETY: Registered just above.
                    unsafe { kernel::bindings::genl_unregister_family(family()) };
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Self {
            notifier,
            _registries: registries,
        })
    }

    /// Registers a notifier that tells `T` of closed netlink sockets.
    fn notify_closed<T: Operations>() -> Result<Pin<KBox<Opaque<kernel::bindings::notifier_block>>>>
    {
        let notifier = KBox::pin(
            Opaque::new(kernel::bindings::notifier_block {
                notifier_call: Some(released::<T>),
                next: core::ptr::null_mut(),
                priority: 0,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The block is pinned on the heap and unregistered in `drop` before it is
        // freed; the chain is a blocking one, so the callback runs in process context.
        to_result(unsafe { kernel::bindings::netlink_register_notifier(notifier.get()) })?;
        Ok(notifier)
    }
}

// SAFETY: The notifier block is only touched by the netlink notifier chain, under the
// chain's lock, and by `new` and `drop`, which have the registration to themselves; the
// registries' lists are `Mutex`es of `Send + Sync` items.
unsafe impl<R: Registries> Send for Registration<R> {}

// SAFETY: `&Registration` gives no access to the notifier block or the lists.
unsafe impl<R: Registries> Sync for Registration<R> {}

impl<R: Registries> Drop for Registration<R> {
    fn drop(&mut self) {
        // SAFETY: The family was registered in `new`; once this returns no operation runs.
        unsafe { kernel::bindings::genl_unregister_family(family()) };
        if let Some(n) = &self.notifier {
            // SAFETY: Registered in `new`; once this returns no callback runs (the chain's
            // lock is taken for writing), so the block may be freed.
            unsafe { kernel::bindings::netlink_unregister_notifier(n.get()) };
        }
        // The registries' lists go last (a field): no device is left, the target types
        // being unregistered first.
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
