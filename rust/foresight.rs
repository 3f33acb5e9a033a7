// SPDX-License-Identifier: GPL-2.0

//! The `foresight` target.
//!
//! ```text
//! <start> <len> foresight <origin_dev> [<#feature_args> <feature>...]
//! ```
//!
//! Every bio is remapped sector for sector onto the origin; completed bios
//! are counted, and written ranges recorded in the dirty log ([`dirty`]).
//! See `Documentation/admin-guide/device-mapper/foresight.rst`.

mod cache;
pub(crate) mod control;
mod dirty;
mod throttle;
pub(crate) mod trace;

use crate::{
    budget::{
        Held,
        Refused, //
    },
    dm::{
        self,
        Args,
        Bio,
        BlkStatus,
        Ctor,
        Deferred,
        Device,
        DeviceVisitor,
        EndIoResult,
        MapResult,
        Op,
        OwnedQueue,
        QueueLimits,
        StatusType,
        StatusWriter,
        Stop,
        Target,
        TargetError,
        TargetOperations, //
    },
    genl,
    logic::{
        rotation::{
            self,
            Caller,
            Refusal, //
        },
        stats::{
            IoKind,
            IoStats, //
        },
        table::{
            self,
            Features,
            Message, //
        },
    },
};
use cache::{
    PrefetchCache,
    WriteMark, //
};
use core::{
    fmt::Write,
    sync::atomic::{
        AtomicU64,
        Ordering::Relaxed, //
    },
};
use dirty::DirtyLog;
use kernel::{
    cpu::CpuId,
    new_mutex,
    prelude::*,
    str::CString,
    sync::{
        Arc,
        Mutex, //
    },
};
use throttle::WriteThrottle;
use trace::Tracer;

/// Default trace rate limit, in records per second per device.
const DEFAULT_TRACE_RATE: u32 = 200_000;

/// The block size foresight tracks and caches in, in sectors (4 KiB).
const BLOCK_SECTORS: u32 = 8;
const SECTOR_SIZE: u32 = 512;

/// One `foresight` target instance.
pub(crate) struct Foresight {
    /// Background work of this device; dropped first, which drains it.
    wq: OwnedQueue,
    /// Shared with the prefetch cache's fetch workers, which are stopped
    /// before the target goes.
    origin: Arc<Device>,
    features: Features,
    shared: Arc<Shared>,
}

/// The devices the netlink operations ([`control`]) reach: every table's
/// [`Shared`], from its constructor to its destructor.
pub(crate) static DEVICES: genl::Registry<Shared> =
    genl::Registry::new(c"foresight_devices", kernel::static_lock_class!());

/// The registry, locked; `None` outside the module's life (no target exists
/// then).
pub(crate) fn devices() -> Option<genl::Locked<Shared>> {
    DEVICES.lock()
}

/// What the target shares with the netlink operations ([`control`]), and
/// the registry of devices ([`DEVICES`]) holds while it exists.
pub(crate) struct Shared {
    /// Number of the mapped device (kernel `dev_t`).
    devt: u32,
    /// Order of the last resume among all tables: of several tables of one
    /// mapped device, netlink uses the one resumed last.
    generation: AtomicU64,
    origin: CString,
    origin_sectors: u64,
    len_sectors: u64,
    /// The I/O counters (shared with the log: its controller's demand).
    stats: Arc<IoStats>,
    log: Arc<DirtyLog>,
    tracer: Arc<Tracer>,
    cache: Arc<PrefetchCache>,
    /// Predicted ranges received.
    predicted: AtomicU64,
    /// The write limit (`write_kbps`).
    throttle: Arc<WriteThrottle>,
    /// The port id of the netlink socket that owns the epoch rotation
    /// ([`rotation`]); shared by the mapped device's tables, so ownership
    /// survives a table reload, and gone with the device.
    rotation: Arc<Mutex<Option<u32>>>,
    /// The table's reservation of the host's cache and bandwidth budgets
    /// ([`crate::budget`]).
    budget: Held,
}

impl Shared {
    /// What the table holds of the host's budgets: its cache (MiB) and
    /// its prefetch bandwidth limit (KiB/s).
    fn reserved(&self) -> (u32, u32) {
        let c = self.cache.config();
        (c.cache_mb, c.prefetch_kbps)
    }

    /// Rotates the dirty log's epoch for `caller`, if [`rotation::decide`]
    /// allows it; ownership changes with the rotate, atomically.  Returns
    /// the new epoch's number.
    pub(crate) fn rotate(&self, caller: Caller, req: rotation::Request) -> Result<u64, Refusal> {
        let mut owner = self.rotation.lock();
        let (epoch, next) = self
            .log
            .rotate_if(|current| rotation::decide(*owner, current, caller, req))?;
        *owner = next;
        Ok(epoch)
    }

    /// The owner of the epoch rotation, if any.
    pub(crate) fn rotation_owner(&self) -> Option<u32> {
        *self.rotation.lock()
    }

    /// Gives up the ownership of port `port` (its socket closed).
    pub(crate) fn release_rotation(&self, port: u32) {
        let mut owner = self.rotation.lock();
        if *owner == Some(port) {
            *owner = None;
        }
    }
}

/// Counts resumes, for [`Shared::generation`].
static RESUMES: AtomicU64 = AtomicU64::new(0);

/// A cache or a prefetch bandwidth the host's budget has no room for.
fn over_budget(r: Refused) -> TargetError {
    let message = match r {
        Refused::Cache => c"cache_mb is over the host's cache budget (see foresight budget)",
        Refused::Bandwidth => {
            c"prefetch_kbps is over the host's bandwidth budget for the origin (0 is no limit; see foresight budget)"
        }
        Refused::Failed(_) => c"Cannot reserve from the host's budget",
    };
    TargetError {
        code: r.code(),
        message,
    }
}

impl Drop for Foresight {
    /// Out of the registry (waiting for a netlink operation that uses it),
    /// then the trace is sent and its work drained before the queue goes.
    fn drop(&mut self) {
        if let Some(mut list) = devices() {
            list.retain(|s| !Arc::ptr_eq(s, &self.shared));
        }
        self.shared.cache.stop();
        self.shared.tracer.quiesce(&self.wq);
    }
}

impl Foresight {
    /// `map` of a read with a cache on: served from it, or counted in
    /// flight to the origin.
    fn map_cached_read(&self, bio: &mut Bio<'_, PerBio>, offset: u64, cpu: u32) -> MapResult {
        let shared = &*self.shared;
        let served = shared.cache.read(bio, offset);
        // A served read may have been cut: the rest is a bio of its own.
        let sectors = bio.sectors();
        shared
            .tracer
            .record(&self.wq, offset, sectors, trace_op(IoKind::Read));
        *bio.per_bio() = PerBio {
            offset,
            sectors,
            kind: IoKind::Read,
            cache_read: !served,
            cpu: cpu as u16,
            write: WriteMark::None,
        };
        if served {
            return MapResult::Completed;
        }
        bio.remap(&self.origin, offset);
        MapResult::Remapped
    }

    /// The cache's status fields: `cache_capacity_bytes cache_bytes hits
    /// misses partial_hits queued inflight errors stale verify_mismatch`,
    /// then `issued completed used wasted` of each tier (critical,
    /// predictive, background), then `predict_dropped`.
    fn write_cache_status(&self, out: &mut StatusWriter<'_>) {
        let c = self.shared.cache.report();
        let s = &c.stats;
        let _ = write!(
            out,
            " {} {} {} {} {} {} {} {} {} {}",
            c.capacity_bytes,
            c.cached_bytes,
            s.hits,
            s.misses,
            s.partial_hits,
            c.queued,
            c.inflight,
            s.errors,
            s.stale_dropped,
            s.verify_mismatch,
        );
        for t in 0..3 {
            let _ = write!(
                out,
                " {} {} {} {}",
                s.issued[t], s.completed[t], s.used[t], s.wasted[t]
            );
        }
        let _ = write!(out, " {}", s.predict_dropped);
    }
}

/// The uAPI's `enum foresight_op` of a bio.
fn trace_op(kind: IoKind) -> u8 {
    use crate::dm::bindings as b;
    (match kind {
        IoKind::Read => b::foresight_op_FORESIGHT_OP_READ,
        IoKind::Write => b::foresight_op_FORESIGHT_OP_WRITE,
        IoKind::Flush => b::foresight_op_FORESIGHT_OP_FLUSH,
        IoKind::Discard => b::foresight_op_FORESIGHT_OP_DISCARD,
        IoKind::WriteZeroes => b::foresight_op_FORESIGHT_OP_WRITE_ZEROES,
        IoKind::Other => b::foresight_op_FORESIGHT_OP_OTHER,
    }) as u8
}

/// What `map` remembers about a bio for `end_io` (the bio's own position
/// and size are consumed by the time it completes).
#[derive(Clone, Copy, Default)]
pub(crate) struct PerBio {
    offset: u64,
    sectors: u32,
    kind: IoKind,
    /// The cache counted this read in flight to the origin.
    cache_read: bool,
    /// The CPU that mapped the bio: picks the shards its completion
    /// counts in (any value is correct; this one saves asking again).
    cpu: u16,
    /// A write, as the cache counted it (whatever the cache's state).
    write: WriteMark,
}

fn io_kind(op: Op) -> IoKind {
    match op {
        Op::Read => IoKind::Read,
        Op::Write => IoKind::Write,
        Op::Flush => IoKind::Flush,
        Op::Discard | Op::SecureErase => IoKind::Discard,
        Op::WriteZeroes => IoKind::WriteZeroes,
        Op::Other => IoKind::Other,
    }
}

/// The sentence for a failed `dm_get_device`.
fn open_error(e: Error) -> TargetError {
    let message = if e == ENOTBLK {
        c"Origin is not a block device"
    } else if e == ENOENT || e == ENODEV || e == ENXIO {
        c"Origin device not found: give a block device path or major:minor"
    } else if e == EBUSY {
        c"Origin device is busy: it is held exclusively by someone else"
    } else {
        c"Cannot open origin device"
    };
    TargetError { code: e, message }
}

#[vtable]
impl TargetOperations for Foresight {
    const NAME: &'static CStr = c"foresight";
    const VERSION: [u32; 3] = [0, 1, 0];
    // The map function never sleeps, and data passes through unchanged.
    const FEATURES: u64 =
        (dm::bindings::DM_TARGET_NOWAIT | dm::bindings::DM_TARGET_PASSES_INTEGRITY) as u64;

    type PerBio = PerBio;

    fn ctr(ctor: &mut Ctor<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, TargetError> {
        let line =
            table::parse_table(args.words()).map_err(|e| TargetError::invalid(e.message()))?;
        let path = args.get(0).ok_or(TargetError::invalid(
            table::TableError::MissingOrigin.message(),
        ))?;
        debug_assert_eq!(path.to_bytes(), line.origin);
        let origin =
            Arc::new(Device::open(ctor, path).map_err(open_error)?, GFP_KERNEL).map_err(|_| {
                TargetError {
                    code: ENOMEM,
                    message: c"Cannot allocate the foresight context",
                }
            })?;
        if ctor.len_sectors() > origin.nr_sectors() {
            return Err(TargetError::invalid(
                c"Target length exceeds the origin device's size",
            ));
        }
        ctor.set_num_flush_bios(1);
        ctor.set_num_write_zeroes_bios(1);
        let discards = u32::from(!line.features.no_discard_passdown);
        ctor.set_num_discard_bios(discards);
        ctor.set_num_secure_erase_bios(discards);
        let nomem = |_| TargetError {
            code: ENOMEM,
            message: c"Cannot allocate the foresight context",
        };
        let metadata = match line.metadata {
            None => None,
            Some((_, i)) => {
                let path = args
                    .get(i)
                    .ok_or(TargetError::invalid(c"Missing metadata device"))?;
                let dev = Device::open(ctor, path).map_err(|e| TargetError {
                    message: c"Cannot open the metadata device",
                    ..open_error(e)
                })?;
                if dev.nr_sectors() << 9 < dirty::metadata_bytes(ctor.len_sectors().div_ceil(8)) {
                    return Err(TargetError::invalid(
                        c"Metadata device too small: it needs 4 KiB plus 2 bits per MiB of origin",
                    ));
                }
                Some(dev)
            }
        };
        let stats = Arc::new(IoStats::new(), GFP_KERNEL).map_err(|_| nomem(ENOMEM))?;
        let log = DirtyLog::new(
            ctor.len_sectors(),
            line.log,
            metadata,
            &line.features,
            stats.clone(),
        )
        .map_err(nomem)?;
        let devt = ctor.md_devt();
        let wq = OwnedQueue::new(c"fsd", devt).map_err(nomem)?;
        // A table of a mapped device that exists (a reload) shares the
        // device's rotation ownership.
        let found = devices().and_then(|list| {
            list.iter()
                .find(|s| s.devt == devt)
                .map(|s| s.rotation.clone())
        });
        let rotation = match found {
            Some(r) => r,
            None => Arc::pin_init(new_mutex!(None), GFP_KERNEL).map_err(nomem)?,
        };
        // The host's budgets, before the cache is allocated.
        let budget = Held::new(
            devt,
            origin.devt(),
            line.cache.cache_mb,
            line.cache.prefetch_kbps,
        )
        .map_err(over_budget)?;
        let origin_name = CString::try_from_fmt(fmt!("{}", origin.name().to_str().unwrap_or("?")))
            .map_err(nomem)?;
        let shared = Arc::new(
            Shared {
                devt,
                generation: AtomicU64::new(0),
                origin: origin_name,
                origin_sectors: origin.nr_sectors(),
                len_sectors: ctor.len_sectors(),
                stats,
                log,
                tracer: Tracer::new(devt, DEFAULT_TRACE_RATE).map_err(nomem)?,
                cache: PrefetchCache::new(
                    line.cache,
                    line.features.verify,
                    devt,
                    ctor.len_sectors() / 8,
                    origin.clone(),
                )
                .map_err(|_| TargetError {
                    code: ENOMEM,
                    message: c"Cannot allocate the prefetch cache: lower cache_mb",
                })?,
                predicted: AtomicU64::new(0),
                throttle: WriteThrottle::new(devt).map_err(nomem)?,
                rotation,
                budget,
            },
            GFP_KERNEL,
        )
        .map_err(|_| nomem(ENOMEM))?;
        let me = KBox::pin(
            Foresight {
                wq,
                origin,
                features: line.features,
                shared,
            },
            GFP_KERNEL,
        )
        .map_err(|_| nomem(ENOMEM))?;
        // Dropping `Foresight` takes the device out of the registry again.
        devices()
            .ok_or(ENODEV)
            .and_then(|mut list| Ok(list.push(me.shared.clone(), GFP_KERNEL)?))
            .map_err(|_| nomem(ENOMEM))?;
        Ok(me)
    }

    #[inline]
    fn map(&self, _target: &Target, bio: &mut Bio<'_, PerBio>) -> MapResult {
        let sectors = bio.sectors();
        // An empty write with REQ_PREFLUSH is how a flush reaches a target.
        let kind = if sectors == 0 && bio.is_preflush() {
            IoKind::Flush
        } else {
            io_kind(bio.op())
        };
        let offset = bio.target_offset();
        let shared = &*self.shared;
        let cpu = CpuId::current().as_u32();
        let write = match kind {
            IoKind::Read if shared.cache.enabled() => {
                return self.map_cached_read(bio, offset, cpu);
            }
            // Counted whatever the cache's state: a cache enabled while it
            // is in flight must not install older data.
            IoKind::Write | IoKind::WriteZeroes | IoKind::Discard if sectors > 0 => {
                shared.cache.write(offset, sectors, cpu)
            }
            _ => WriteMark::None,
        };
        *bio.per_bio() = PerBio {
            offset,
            sectors,
            kind,
            cache_read: false,
            cpu: cpu as u16,
            write,
        };
        shared
            .tracer
            .record(&self.wq, offset, sectors, trace_op(kind));
        bio.remap(&self.origin, offset);
        if kind == IoKind::Write && sectors > 0 && !shared.throttle.admit(bio.size()) {
            // Over the write limit: it waits its turn (see `defer`).
            return MapResult::Defer;
        }
        MapResult::Remapped
    }

    /// A write over the limit waits in the throttle.
    fn defer(&self, _target: &Target, bio: Deferred) {
        self.shared.throttle.defer(bio);
    }

    #[inline]
    fn end_io(
        &self,
        _target: &Target,
        bio: &mut Bio<'_, PerBio>,
        status: &mut BlkStatus,
    ) -> EndIoResult {
        let PerBio {
            offset,
            sectors,
            kind,
            cache_read,
            cpu,
            write,
        } = *bio.per_bio();
        let shared = &*self.shared;
        if cache_read {
            shared.cache.read_done();
        } else {
            shared.cache.write_done(write);
        }
        let cpu = u32::from(cpu);
        shared.stats.record(cpu, kind, sectors, status.is_ok());
        if matches!(kind, IoKind::Write | IoKind::WriteZeroes | IoKind::Discard) {
            // Before the bio completes to its submitter, even if it failed:
            // its data may be partly on the origin.
            shared.log.record(&self.wq, cpu, offset, sectors);
        }
        EndIoResult::Done
    }

    fn status(&self, target: &Target, kind: StatusType, out: &mut StatusWriter<'_>) {
        let origin = self.origin.name().to_str().unwrap_or("?");
        let _ = match kind {
            StatusType::Info => {
                let t = self.shared.stats.totals();
                let r = write!(
                    out,
                    "{} {} {} {} {} {} {} {} ",
                    t.read_bios,
                    t.read_sectors,
                    t.write_bios,
                    t.write_sectors,
                    t.discard_bios,
                    t.discard_sectors,
                    t.flush_bios,
                    t.errors
                );
                self.shared.log.write_status(out);
                self.write_cache_status(out);
                r
            }
            StatusType::Table => table::write_table(
                out,
                origin,
                &self.features,
                &self.shared.log.config(),
                &self.shared.cache.config(),
                self.shared.log.metadata_name().and_then(|n| n.to_str().ok()),
            ),
            StatusType::Ima => write!(
                out,
                "target_name={},target_version={}.{}.{},origin={},origin_sectors={},len={},discard_passdown={};",
                Self::NAME.to_str().unwrap_or("?"),
                Self::VERSION[0],
                Self::VERSION[1],
                Self::VERSION[2],
                origin,
                self.origin.nr_sectors(),
                target.len_sectors(),
                if self.features.no_discard_passdown { 'n' } else { 'y' },
            ),
        };
    }

    fn message(
        &self,
        _target: &Target,
        args: Args<'_>,
        out: &mut StatusWriter<'_>,
    ) -> Result<(), TargetError> {
        let invalid = |e: table::TableError| TargetError::invalid(e.message());
        match table::parse_message(args.words()).map_err(|e| TargetError::invalid(e.message()))? {
            Message::ResetStats => self.shared.stats.reset(),
            Message::WriteKbps(kbps) => self.shared.throttle.set_kbps(kbps),
            Message::Rotate(req) => {
                let epoch = self
                    .shared
                    .rotate(Caller::Message, req)
                    .map_err(|r| TargetError {
                        code: match r {
                            Refusal::Owned(_) => EBUSY,
                            _ => ESTALE,
                        },
                        message: r.message(),
                    })?;
                let _ = write!(out, "{epoch}");
            }
            Message::Level(l) => self.shared.log.set_level(Some(l)),
            Message::LevelAuto => {
                self.shared.log.set_level(None);
                self.shared.log.kick(&self.wq);
            }
            Message::Set(k, v) => self.shared.log.set(k, v).map_err(invalid)?,
            Message::Predict(bytes_per_sec) => self.shared.log.predict(bytes_per_sec),
            Message::Prelog(start, len) => {
                let missed = self.shared.log.prelog(start, len);
                let _ = write!(out, "{missed}");
            }
            Message::Extents(epoch, from) => self.shared.log.write_extents(epoch, from, out),
            Message::CacheMb(mb) => {
                let s = &self.shared;
                let (_, kbps) = s.reserved();
                s.budget
                    .change(mb, kbps, || s.cache.resize(mb), || s.reserved())
                    .map_err(over_budget)?
                    .map_err(|_| TargetError {
                        code: ENOMEM,
                        message: c"Cannot allocate a cache of that size",
                    })?
            }
            Message::CacheSet(k, v) if k == b"prefetch_kbps" => {
                let s = &self.shared;
                let (mb, _) = s.reserved();
                s.budget
                    .change(mb, v, || s.cache.set(k, v), || s.reserved())
                    .map_err(over_budget)?
                    .map_err(invalid)?
            }
            Message::CacheSet(k, v) => self.shared.cache.set(k, v).map_err(invalid)?,
            Message::Prefetch(start, len, p) => {
                let n = self.shared.cache.predict(start, len, p);
                let _ = write!(out, "{n}");
            }
        }
        Ok(())
    }

    /// Writes waiting in the throttle go now, and all pass until resume: a
    /// suspend (a switchover) never waits on the limit.
    fn presuspend(&self, _target: &Target) {
        self.shared.throttle.presuspend();
    }

    /// Background work stops once the device is suspended, and the dirty
    /// log is saved to the metadata device, if there is one.
    fn postsuspend(&self, _target: &Target) {
        self.shared.cache.stop();
        self.shared.tracer.quiesce(&self.wq);
        self.shared.log.save();
    }

    /// Loads the saved dirty log (first resume) and marks it in use.
    fn preresume(&self, _target: &Target) -> Result {
        self.shared.log.preresume()
    }

    /// The table is live: netlink now prefers it to older tables of the
    /// same device.
    fn resume(&self, _target: &Target) {
        let g = RESUMES.fetch_add(1, Relaxed) + 1;
        self.shared.generation.store(g, Relaxed);
        self.shared.cache.resume();
        self.shared.throttle.resume();
    }

    fn iterate_devices(
        &self,
        target: &Target,
        visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), Stop> {
        visitor.visit(&self.origin, 0, target.len_sectors())
    }

    /// Like dm-era: keep the stacked hints if they suit foresight's 4 KiB
    /// blocks, else advertise the block size as the optimal I/O size.
    fn io_hints(&self, _target: &Target, limits: &mut QueueLimits) {
        let block = BLOCK_SECTORS * SECTOR_SIZE;
        let io_opt = limits.io_opt();
        if io_opt < block || io_opt % block != 0 {
            limits.set_io_min(limits.io_min().max(limits.logical_block_size()));
            limits.set_io_opt(block);
        }
    }
}
