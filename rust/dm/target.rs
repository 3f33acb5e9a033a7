// SPDX-License-Identifier: GPL-2.0

//! Target types: the operations trait, its C vtable, and the registration.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

use super::{
    bindings as dmb,
    bio::per_bio_ptr,
    Args,
    Bio,
    BlkStatus,
    Deferred,
    Device,
    QueueLimits,
    StatusType,
    StatusWriter,
    Suspended, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    bindings,
    error::{
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    new_mutex,
    prelude::*,
    str::CStrExt,
    sync::{
        Arc,
        Mutex, //
    },
    types::{
        ForeignOwnable,
        Opaque, //
    },
    ThisModule,
};

/// What `map` did with a bio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapResult {
    /// The bio was remapped; device-mapper submits it.
    Remapped,
    /// The target takes the bio (remapped) to submit it later: device-mapper
    /// is told it was submitted, and the bio goes to
    /// [`TargetOperations::defer`] once `map` has returned.
    Defer,
    /// The target has filled the bio's data (a read served from memory):
    /// complete it successfully now.
    Completed,
    /// Fail the bio.
    Kill,
    /// Push the bio back to device-mapper to be mapped again later.
    Requeue,
}

/// What `end_io` decided about a completed bio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndIoResult {
    /// Complete the bio to its submitter.
    Done,
    /// The target will complete the bio itself later.
    Incomplete,
    /// Map the bio again.
    Requeue,
}

/// A failed constructor or message: an errno, and a sentence for the user
/// (for `ctr`, device-mapper prints it as the reason the table was refused).
#[derive(Clone, Copy, Debug)]
pub struct TargetError {
    /// The error code returned to device-mapper.
    pub code: Error,
    /// What went wrong, in words a user can act on.
    pub message: &'static CStr,
}

impl TargetError {
    /// `-EINVAL` with `message`.
    pub const fn invalid(message: &'static CStr) -> Self {
        Self {
            code: EINVAL,
            message,
        }
    }
}

/// Stops [`TargetOperations::iterate_devices`]: a callout returned non-zero.
#[derive(Clone, Copy, Debug)]
pub struct Stop(c_int);

/// Hands each device a target maps onto to device-mapper's callout.
pub struct DeviceVisitor<'a> {
    ti: *mut dmb::dm_target,
    callout: unsafe extern "C" fn(
        *mut dmb::dm_target,
        *mut dmb::dm_dev,
        bindings::sector_t,
        bindings::sector_t,
        *mut c_void,
    ) -> c_int,
    data: *mut c_void,
    _p: PhantomData<&'a mut ()>,
}

impl DeviceVisitor<'_> {
    /// Reports that the target maps `len` sectors of `dev` starting at `start`.
    pub fn visit(&mut self, dev: &Device, start: u64, len: u64) -> Result<(), Stop> {
        // SAFETY: `callout` and `data` came together from device-mapper for this target `ti`,
        // and `dev` is one of `ti`'s devices.
        let r = unsafe { (self.callout)(self.ti, dev.as_raw(), start, len, self.data) };
        if r == 0 {
            Ok(())
        } else {
            Err(Stop(r))
        }
    }
}

/// A target instance, as seen after construction.
///
/// # Invariants
///
/// Wraps a valid `dm_target` for as long as it is borrowed.
#[repr(transparent)]
pub struct Target(Opaque<dmb::dm_target>);

impl Target {
    /// # Safety
    ///
    /// `ti` must be a valid target for `'a`.
    unsafe fn from_raw<'a>(ti: *mut dmb::dm_target) -> &'a Self {
        // SAFETY: `Target` is `repr(transparent)` over `Opaque<dm_target>`; `ti` is valid.
        unsafe { &*ti.cast::<Self>() }
    }

    fn raw(&self) -> *mut dmb::dm_target {
        self.0.get()
    }

    /// The target's first sector on the dm device.
    pub fn begin(&self) -> u64 {
        // SAFETY: By the type invariants the target is valid; `begin` is set before `ctr`
        // and never changes.
        unsafe { (*self.raw()).begin }
    }

    /// The target's length in sectors.
    pub fn len_sectors(&self) -> u64 {
        // SAFETY: As for `begin`.
        unsafe { (*self.raw()).len }
    }

    /// Raises a dm event on the target's table (`dmsetup wait` returns).
    pub fn event(&self) {
        // SAFETY: By the type invariants the target is valid, and so is its table while the
        // target is (a table outlives its targets).
        unsafe { dmb::dm_table_event((*self.raw()).table) };
    }
}

/// A target's pointer, sendable: see [`TableEvent`].
struct TargetPtr(NonNull<dmb::dm_target>);

// SAFETY: Only `TableEvent` holds one, and uses it under its lock while the target exists.
unsafe impl Send for TargetPtr {}

/// Raises dm events on a target's table from background work (a copy that
/// finished, say), where no [`Target`] is at hand; process context only
/// (`dm_table_event` takes a mutex).
///
/// # Invariants
///
/// While `ti` holds a pointer, it is a target whose destructor has not
/// begun: the constructor trampoline keeps every handle it gave out next to
/// the target, and the destructor trampoline closes them before the target
/// is dropped (or the constructor's, if it fails), so a handle kept longer
/// only stops raising events.
#[pin_data]
pub struct TableEvent {
    #[pin]
    ti: Mutex<Option<TargetPtr>>,
}

impl TableEvent {
    /// Raises an event (`dmsetup wait` returns), unless the target is gone.
    pub fn raise(&self) {
        let ti = self.ti.lock();
        if let Some(t) = ti.as_ref() {
            // SAFETY: By the type invariants the target exists (its destructor waits for this
            // lock), and so does its table.
            unsafe { dmb::dm_table_event((*t.0.as_ptr()).table) };
        }
    }

    fn close(&self) {
        *self.ti.lock() = None;
    }
}

/// The target under construction, for `ctr` to configure.
///
/// # Invariants
///
/// `ti` is the valid target device-mapper is constructing; `ctr` has it
/// exclusively.
pub struct Ctor<'a> {
    ti: *mut dmb::dm_target,
    /// The handle [`Ctor::table_event`] gave out, if any.
    event: Option<Arc<TableEvent>>,
    _p: PhantomData<&'a mut dmb::dm_target>,
}

/// What a constructed target's `private` owns: the target, and the event
/// handle its constructor took, closed before the target is dropped.
struct Private<T> {
    this: Pin<KBox<T>>,
    event: Option<Arc<TableEvent>>,
}

impl Ctor<'_> {
    pub(super) fn as_raw(&self) -> *mut dmb::dm_target {
        self.ti
    }

    /// The target's first sector on the dm device.
    pub fn begin(&self) -> u64 {
        // SAFETY: By the type invariants `ti` is valid.
        unsafe { (*self.ti).begin }
    }

    /// The target's length in sectors.
    pub fn len_sectors(&self) -> u64 {
        // SAFETY: By the type invariants `ti` is valid.
        unsafe { (*self.ti).len }
    }

    /// The number (`dev_t`) of the mapped device whose table this target
    /// is in: the key to its name ([`super::device_name`]).
    pub fn md_devt(&self) -> u32 {
        // SAFETY: By the type invariants `ti` is valid; its table and mapped device exist.
        unsafe { dmb::foresight_target_md_dev(self.ti) }
    }

    /// How many empty flush bios the target gets per flush (0 or 1).
    pub fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// The device advertises a volatile write cache (and FUA) whatever its
    /// devices do, so that flushes reach the target: for a target whose own
    /// metadata must be durable when a write is.
    pub fn set_flush_supported(&mut self) {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        unsafe { (*self.ti).set_flush_supported(true) };
    }

    /// How many bios the target gets per discard (0 disables discards).
    pub fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// How many bios the target gets per secure erase (0 disables it).
    pub fn set_num_secure_erase_bios(&mut self, n: u32) {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        unsafe { (*self.ti).num_secure_erase_bios = n };
    }

    /// How many bios the target gets per write-zeroes (0 disables it).
    pub fn set_num_write_zeroes_bios(&mut self, n: u32) {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        unsafe { (*self.ti).num_write_zeroes_bios = n };
    }

    /// A handle to raise events on the target's table from background
    /// work; the target must report it from
    /// [`TargetOperations::table_event`].
    pub fn table_event(&mut self) -> Result<Arc<TableEvent>> {
        if let Some(e) = &self.event {
            return Ok(e.clone());
        }
        // INVARIANT: `ti` is being constructed; the trampolines close the handle kept in
        // `event` before the target goes (see `TableEvent`).
        let ti = NonNull::new(self.ti).ok_or(EINVAL)?;
        let e = Arc::pin_init(
            pin_init!(TableEvent {
                ti <- new_mutex!(Some(TargetPtr(ti))),
            }),
            GFP_KERNEL,
        )?;
        self.event = Some(e.clone());
        Ok(e)
    }

    /// Splits every bio (discards and write-zeroes included) at multiples
    /// of `sectors` from the target's start: no bio `map` sees crosses one.
    pub fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: By the type invariants `ti` is valid and ours during `ctr`.
        kernel::error::to_result(unsafe { dmb::dm_set_target_max_io_len(self.ti, sectors) })?;
        // SAFETY: As above; a bitfield of the target only `ctr` writes.
        unsafe { (*self.ti).set_max_discard_granularity(true) };
        Ok(())
    }
}

/// The operations of a device-mapper target type.
///
/// Device-mapper calls `map`, `end_io`, `status` and `message` on many CPUs
/// at once, so they take `&self`: state that changes lives behind atomics
/// or locks.
#[vtable]
pub trait TargetOperations: Sized + Send + Sync {
    /// The target's name in tables.
    const NAME: &'static CStr;
    /// The target's version, reported by `dmsetup targets`.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags.
    const FEATURES: u64 = 0;

    /// Data device-mapper allocates with every bio of this target, set to
    /// `Default::default()` before `map` sees the bio.
    type PerBio: Copy + Default;

    /// Builds a target instance from its table line.
    fn ctr(ctor: &mut Ctor<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, TargetError>;

    /// Maps a bio: remaps it onto an underlying device, takes it, or fails it.
    fn map(&self, target: &Target, bio: &mut Bio<'_, Self::PerBio>) -> MapResult;

    /// Takes a bio `map` deferred ([`MapResult::Defer`]), in `map`'s context
    /// (atomic: queue it; submit it from process context).  By default it is
    /// submitted at once.
    fn defer(&self, _target: &Target, bio: Deferred) {
        bio.submit()
    }

    /// Sees a bio complete, before its submitter does.
    fn end_io(
        &self,
        _target: &Target,
        _bio: &mut Bio<'_, Self::PerBio>,
        _status: &mut BlkStatus,
    ) -> EndIoResult {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Writes the target's status (`dmsetup status`, `dmsetup table`, IMA).
    fn status(&self, _target: &Target, _kind: StatusType, _out: &mut StatusWriter<'_>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Handles `dmsetup message`; may write a reply into `out`.
    fn message(
        &self,
        _target: &Target,
        _args: Args<'_>,
        _out: &mut StatusWriter<'_>,
    ) -> Result<(), TargetError> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Reports each underlying device area to `visitor`.
    fn iterate_devices(
        &self,
        _target: &Target,
        _visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), Stop> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Adjusts the stacked queue limits of the dm device.
    fn io_hints(&self, _target: &Target, _limits: &mut QueueLimits) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called before a suspend starts.
    fn presuspend(&self, _target: &Target) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called once the device is suspended and its I/O has drained.  The
    /// suspend hooks (`postsuspend`, `preresume`, `resume`: the device is
    /// suspended throughout) run in a [`Suspended`] scope: allocations do
    /// no I/O (reclaim writing back through the device would wait for it
    /// forever), and lockdep reports one that could.
    fn postsuspend(&self, _target: &Target) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called before a resume; an error aborts it.
    fn preresume(&self, _target: &Target) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called after a resume.
    fn resume(&self, _target: &Target) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The `extern "C"` trampolines of a target type.
struct OperationsVTable<T: TargetOperations>(PhantomData<T>);

impl<T: TargetOperations> OperationsVTable<T> {
    /// # Safety
    ///
    /// `ti` must be a constructed target of type `T`: its `private` holds a
    /// `KBox<Private<T>>` from `ctr` that is not dropped for `'a`.
    unsafe fn this<'a>(ti: *mut dmb::dm_target) -> (&'a T, &'a Target) {
        // SAFETY: By the safety requirements `private` came from `into_foreign` in `ctr` and
        // `dtr` has not run.
        let private = unsafe { <KBox<Private<T>> as ForeignOwnable>::borrow((*ti).private) };
        // SAFETY: `ti` is valid for `'a`.
        (private.this.as_ref().get_ref(), unsafe {
            Target::from_raw(ti)
        })
    }

    /// # Safety
    ///
    /// Called by device-mapper with a target being constructed and its arguments.
    unsafe extern "C" fn ctr(
        ti: *mut dmb::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> c_int {
        // SAFETY: device-mapper passes `argc` valid strings that outlive `ctr`.
        let args = unsafe { Args::from_raw(argc, argv) };
        // INVARIANT: `ti` is the target under construction, ours during `ctr`.
        let mut ctor = Ctor {
            ti,
            event: None,
            _p: PhantomData,
        };
        let made = T::ctr(&mut ctor, args);
        let event = ctor.event.take();
        let made = made.and_then(|this| {
            KBox::new(
                Private {
                    this,
                    event: event.clone(),
                },
                GFP_KERNEL,
            )
            .map_err(|_| TargetError {
                code: ENOMEM,
                message: c"Out of memory",
            })
        });
        if made.is_err() {
            if let Some(e) = &event {
                e.close();
            }
        }
        match made {
            Ok(this) => {
                // SAFETY: `ti` is valid and ours during `ctr`.
                unsafe {
                    (*ti).per_io_data_size = core::mem::size_of::<T::PerBio>() as c_uint;
                    // Deferred bios are accounted when submitted (`dm_submit_bio_remap`), not
                    // when `map` returns: by then one may have completed.
                    (*ti).set_accounts_remapped_io(true);
                    (*ti).private = this.into_foreign();
                }
                0
            }
            Err(e) => {
                // SAFETY: `ti` is valid; `error` takes a string device-mapper never frees, and
                // `message` is `'static`.
                unsafe { (*ti).error = e.message.as_char_ptr().cast_mut() };
                e.code.to_errno()
            }
        }
    }

    /// # Safety
    ///
    /// Called by device-mapper once, after the last use of a constructed target.
    unsafe extern "C" fn dtr(ti: *mut dmb::dm_target) {
        // SAFETY: `private` came from `into_foreign` in `ctr`; this is its last use.
        let private = unsafe { <KBox<Private<T>> as ForeignOwnable>::from_foreign((*ti).private) };
        // No event is raised on the target from here on (see `TableEvent`).
        if let Some(e) = &private.event {
            e.close();
        }
        drop(private);
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target and a bio to map.
    unsafe extern "C" fn map(ti: *mut dmb::dm_target, bio: *mut bindings::bio) -> c_int {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        // SAFETY: The bio has `size_of::<T::PerBio>()` bytes of per-bio data (set in `ctr`).
        let data = unsafe { per_bio_ptr::<T::PerBio>(bio) };
        // SAFETY: `data` is valid for writes; it is initialised here, before any `Bio` for
        // this bio exists.
        unsafe { data.write(T::PerBio::default()) };
        // SAFETY: The bio is being mapped by `ti`, ours until we return, per-bio data is set.
        let mut wrapped = unsafe { Bio::from_raw(bio, ti, data, true) };
        (match this.map(target, &mut wrapped) {
            MapResult::Remapped => dmb::DM_MAPIO_REMAPPED,
            MapResult::Defer => {
                // SAFETY: `wrapped` is not used again; the bio was given to this `map`, which
                // reports it submitted, and the target sets `accounts_remapped_io` (`ctr`).
                this.defer(target, unsafe { Deferred::from_raw(bio) });
                dmb::DM_MAPIO_SUBMITTED
            }
            MapResult::Completed => {
                // SAFETY: The bio is ours and its data filled; after `bio_endio` it is not
                // touched again (device-mapper is told it was submitted).
                unsafe { bindings::bio_endio(bio) };
                dmb::DM_MAPIO_SUBMITTED
            }
            MapResult::Kill => dmb::DM_MAPIO_KILL,
            MapResult::Requeue => dmb::DM_MAPIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target and a bio it mapped.
    unsafe extern "C" fn end_io(
        ti: *mut dmb::dm_target,
        bio: *mut bindings::bio,
        error: *mut bindings::blk_status_t,
    ) -> c_int {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        // SAFETY: The bio went through `map`, which initialised its per-bio data; it is ours
        // until we return.
        let mut bio = unsafe { Bio::from_raw(bio, ti, per_bio_ptr::<T::PerBio>(bio), false) };
        // SAFETY: `error` is a valid pointer for the duration of the call.
        let mut status = BlkStatus(unsafe { *error });
        let r = this.end_io(target, &mut bio, &mut status);
        // SAFETY: As above.
        unsafe { *error = status.0 };
        (match r {
            EndIoResult::Done => dmb::DM_ENDIO_DONE,
            EndIoResult::Incomplete => dmb::DM_ENDIO_INCOMPLETE,
            EndIoResult::Requeue => dmb::DM_ENDIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target and a result buffer.
    unsafe extern "C" fn status(
        ti: *mut dmb::dm_target,
        kind: dmb::status_type_t,
        _flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        // SAFETY: `result` has `maxlen` bytes, ours for the call.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        this.status(target, StatusType::from_raw(kind), &mut out);
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target, words and a result buffer.
    unsafe extern "C" fn message(
        ti: *mut dmb::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        // SAFETY: device-mapper passes `argc` valid strings that outlive the call.
        let args = unsafe { Args::from_raw(argc, argv) };
        // SAFETY: `result` has `maxlen` bytes, ours for the call.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        match this.message(target, args, &mut out) {
            // 1 tells device-mapper the result buffer holds a reply to print.
            Ok(()) => c_int::from(!out.is_empty()),
            Err(e) => {
                pr_warn!(
                    "foresight: message refused: {}\n",
                    e.message.to_str().unwrap_or("?")
                );
                e.code.to_errno()
            }
        }
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target and a callout.
    unsafe extern "C" fn iterate_devices(
        ti: *mut dmb::dm_target,
        callout: dmb::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        let Some(callout) = callout else { return 0 };
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        let mut visitor = DeviceVisitor {
            ti,
            callout,
            data,
            _p: PhantomData,
        };
        match this.iterate_devices(target, &mut visitor) {
            Ok(()) => 0,
            Err(Stop(r)) => r,
        }
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target and the limits being stacked.
    unsafe extern "C" fn io_hints(ti: *mut dmb::dm_target, limits: *mut bindings::queue_limits) {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        // SAFETY: `limits` is valid and ours for the call.
        this.io_hints(target, unsafe { QueueLimits::from_raw(limits) });
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target.
    unsafe extern "C" fn presuspend(ti: *mut dmb::dm_target) {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        this.presuspend(target);
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target.
    unsafe extern "C" fn postsuspend(ti: *mut dmb::dm_target) {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        let _suspended = Suspended::begin();
        this.postsuspend(target);
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target.
    unsafe extern "C" fn preresume(ti: *mut dmb::dm_target) -> c_int {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        let _suspended = Suspended::begin();
        match this.preresume(target) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by device-mapper with a constructed target.
    unsafe extern "C" fn resume(ti: *mut dmb::dm_target) {
        // SAFETY: `ti` is a constructed target of type `T`.
        let (this, target) = unsafe { Self::this(ti) };
        let _suspended = Suspended::begin();
        this.resume(target);
    }

    /// The C `target_type` for `T`, unregistered.
    fn build(module: &'static ThisModule) -> dmb::target_type {
        let mut tt: dmb::target_type = pin_init::zeroed();
        tt.name = T::NAME.as_char_ptr();
        tt.version = T::VERSION;
        tt.features = T::FEATURES;
        tt.module = module.as_ptr();
        tt.ctr = Some(Self::ctr);
        tt.dtr = Some(Self::dtr);
        tt.map = Some(Self::map);
        tt.end_io = if T::HAS_END_IO {
            Some(Self::end_io)
        } else {
            None
        };
        tt.status = if T::HAS_STATUS {
            Some(Self::status)
        } else {
            None
        };
        tt.message = if T::HAS_MESSAGE {
            Some(Self::message)
        } else {
            None
        };
        tt.iterate_devices = if T::HAS_ITERATE_DEVICES {
            Some(Self::iterate_devices)
        } else {
            None
        };
        tt.io_hints = if T::HAS_IO_HINTS {
            Some(Self::io_hints)
        } else {
            None
        };
        tt.presuspend = if T::HAS_PRESUSPEND {
            Some(Self::presuspend)
        } else {
            None
        };
        tt.postsuspend = if T::HAS_POSTSUSPEND {
            Some(Self::postsuspend)
        } else {
            None
        };
        tt.preresume = if T::HAS_PRERESUME {
            Some(Self::preresume)
        } else {
            None
        };
        tt.resume = if T::HAS_RESUME {
            Some(Self::resume)
        } else {
            None
        };
        tt
    }
}

/// A registered target type.
///
/// # Invariants
///
/// `tt` holds a `target_type` built for `T` and registered with
/// `dm_register_target`; it is unregistered exactly once, in [`PinnedDrop`].
/// While registered, the module that owns it cannot be unloaded with a table
/// using it, since `tt.module` is that module.
#[pin_data(PinnedDrop)]
pub struct Registration<T: TargetOperations> {
    #[pin]
    tt: Opaque<dmb::target_type>,
    _t: PhantomData<T>,
}

// SAFETY: The registration is only touched at registration and in drop, from any thread.
unsafe impl<T: TargetOperations> Send for Registration<T> {}
// SAFETY: No `&self` method touches the `target_type`.
unsafe impl<T: TargetOperations> Sync for Registration<T> {}

impl<T: TargetOperations> Registration<T> {
    /// Registers target type `T`, owned by `module`.
    pub fn new(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            tt <- Opaque::try_ffi_init(move |slot: *mut dmb::target_type| {
                Suspended::lockdep_init();
                // SAFETY: The initializer may write to `slot`.
                unsafe { slot.write(OperationsVTable::<T>::build(module)) };
                // SAFETY: `slot` holds a complete target type and is pinned; it is unregistered
                // in `drop` before its memory goes away.
                // INVARIANT: On success `tt` is registered.
                to_result(unsafe { dmb::dm_register_target(slot) })
            }),
            _t: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: TargetOperations> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants `tt` is registered.
        unsafe { dmb::dm_unregister_target(self.tt.get()) };
    }
}
