// SPDX-License-Identifier: GPL-2.0

//! The registry of the devices a family's operations reach: a locked list
//! in a static, whose lock and buffer the family's [`Registration`] owns.
//!
//! [`Registration`]: super::Registration

use core::{
    ptr,
    sync::atomic::{
        AtomicPtr,
        Ordering::{
            AcqRel,
            Acquire,
            Release, //
        },
    },
};
use kernel::{
    prelude::*,
    sync::{
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        Arc,
        LockClassKey,
        Mutex, //
    },
};

/// The list a [`Registry`] points to while its family is registered.
pub(super) type List<D> = Mutex<KVec<Arc<D>>>;

/// A registry of `D`s: declared as a static by feature code, attached to a
/// family by [`Registration::new`](super::Registration::new).
///
/// # Invariants
///
/// `list` is null, or points to the list of the one [`Attached`] that set
/// it, which clears it before the list is freed.
pub struct Registry<D: Send + Sync + 'static> {
    list: AtomicPtr<List<D>>,
    /// The lock's name and class: each registry's own, so that lockdep
    /// tells them apart (an operation on one may take another's).
    name: &'static CStr,
    class: Pin<&'static LockClassKey>,
}

/// The registry, locked.
pub type Locked<D> = Guard<'static, KVec<Arc<D>>, MutexBackend>;

impl<D: Send + Sync + 'static> Registry<D> {
    /// An empty registry, attached to no family, whose lock is named
    /// `name`, of lock class `class` (`kernel::static_lock_class!()` where
    /// the registry is declared).
    pub const fn new(name: &'static CStr, class: Pin<&'static LockClassKey>) -> Self {
        // INVARIANT: null.
        Self {
            list: AtomicPtr::new(ptr::null_mut()),
            name,
            class,
        }
    }

    /// The list, locked; `None` when no family is registered (before module
    /// init is done, or once module exit has begun).
    ///
    /// Operations, targets and socket notifications all run between the
    /// family's registration and its removal, which waits for them; a
    /// guard must not be kept beyond the call that took it.
    pub fn lock(&'static self) -> Option<Locked<D>> {
        let list = self.list.load(Acquire);
        if list.is_null() {
            return None;
        }
        // SAFETY: By the type invariant `list` points to an attached list; it is freed
        // only by `Attached::drop`, which runs once the family is unregistered and every
        // target is gone, so no caller is left to hold the guard.
        Some(unsafe { &*list }.lock())
    }
}

/// The registries a family's operations reach: one (`&'static
/// Registry<D>`), or a pair of them (nested for more).
pub trait Registries {
    /// The registries attached: what detaches them on drop.
    type Attached;

    /// Attaches a new, empty list to each registry; `EBUSY` if one has a
    /// list already.
    fn attach(self) -> Result<Self::Attached>;
}

impl<D: Send + Sync + 'static> Registries for &'static Registry<D> {
    type Attached = Attached<D>;

    fn attach(self) -> Result<Attached<D>> {
        Attached::new(self)
    }
}

impl<A: Registries, B: Registries> Registries for (A, B) {
    type Attached = (A::Attached, B::Attached);

    fn attach(self) -> Result<Self::Attached> {
        let a = self.0.attach()?;
        Ok((a, self.1.attach()?))
    }
}

/// Ownership of a registry's list, held by the family's registration.
pub struct Attached<D: Send + Sync + 'static> {
    registry: &'static Registry<D>,
    list: Pin<KBox<List<D>>>,
}

impl<D: Send + Sync + 'static> Attached<D> {
    /// Attaches a new, empty list to `registry`; `EBUSY` if it has one.
    fn new(registry: &'static Registry<D>) -> Result<Self> {
        let list = KBox::pin_init(
            Mutex::new(KVec::new(), registry.name, registry.class),
            GFP_KERNEL,
        )?;
        let raw = ptr::from_ref::<List<D>>(&*list).cast_mut();
        // INVARIANT: Set to this list, which `drop` clears before freeing it.
        registry
            .list
            .compare_exchange(ptr::null_mut(), raw, AcqRel, Acquire)
            .map_err(|_| EBUSY)?;
        Ok(Self { registry, list })
    }
}

impl<D: Send + Sync + 'static> Drop for Attached<D> {
    fn drop(&mut self) {
        self.registry.list.store(ptr::null_mut(), Release);
        // Anything left (nothing, once every target is gone) is put.
        *self.list.lock() = KVec::new();
    }
}
