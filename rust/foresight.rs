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

pub(crate) mod control;
mod dirty;
pub(crate) mod trace;

use crate::{
    dm::{
        self,
        Args,
        Bio,
        BlkStatus,
        Ctor,
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
    logic::{
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
use crate::genl;
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
    prelude::*,
    str::CString,
    sync::Arc, //
};
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
    origin: Device,
    features: Features,
    shared: Arc<Shared>,
}

/// What the target shares with the netlink operations ([`control`]), and
/// the registry of devices ([`genl::devices`]) holds while it exists.
pub(crate) struct Shared {
    /// Number of the mapped device (kernel `dev_t`).
    devt: u32,
    /// Order of the last resume among all tables: of several tables of one
    /// mapped device, netlink uses the one resumed last.
    generation: AtomicU64,
    origin: CString,
    origin_sectors: u64,
    len_sectors: u64,
    stats: IoStats,
    log: Arc<DirtyLog>,
    tracer: Arc<Tracer>,
    /// Predicted ranges received.
    predicted: AtomicU64,
}

/// Counts resumes, for [`Shared::generation`].
static RESUMES: AtomicU64 = AtomicU64::new(0);

impl Drop for Foresight {
    /// Out of the registry (waiting for a netlink operation that uses it),
    /// then the trace is sent and its work drained before the queue goes.
    fn drop(&mut self) {
        {
            let mut list = genl::devices();
            list.retain(|s| !Arc::ptr_eq(s, &self.shared));
        }
        self.shared.tracer.quiesce(&self.wq);
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
        let origin = Device::open(ctor, path).map_err(open_error)?;
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
        let log = DirtyLog::new(ctor.len_sectors(), line.log, metadata).map_err(nomem)?;
        let wq = OwnedQueue::new(c"kforesightd").map_err(nomem)?;
        let devt = ctor.md_devt();
        let origin_name = CString::try_from_fmt(fmt!("{}", origin.name().to_str().unwrap_or("?")))
            .map_err(nomem)?;
        let shared = Arc::new(
            Shared {
                devt,
                generation: AtomicU64::new(0),
                origin: origin_name,
                origin_sectors: origin.nr_sectors(),
                len_sectors: ctor.len_sectors(),
                stats: IoStats::new(),
                log,
                tracer: Tracer::new(devt, DEFAULT_TRACE_RATE).map_err(nomem)?,
                predicted: AtomicU64::new(0),
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
        genl::devices()
            .push(me.shared.clone(), GFP_KERNEL)
            .map_err(|_| nomem(ENOMEM))?;
        Ok(me)
    }

    #[inline]
    fn map(&self, _target: &Target, bio: &mut Bio<'_, PerBio>) -> MapResult {
        let kind = io_kind(bio.op());
        let sectors = bio.sectors();
        let offset = bio.target_offset();
        *bio.per_bio() = PerBio {
            offset,
            sectors,
            kind,
        };
        self.shared
            .tracer
            .record(&self.wq, offset, sectors, trace_op(kind));
        bio.remap(&self.origin, offset);
        MapResult::Remapped
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
        } = *bio.per_bio();
        let shared = &*self.shared;
        shared
            .stats
            .record(CpuId::current().as_u32(), kind, sectors, status.is_ok());
        if matches!(kind, IoKind::Write | IoKind::WriteZeroes | IoKind::Discard) {
            // Before the bio completes to its submitter, even if it failed:
            // its data may be partly on the origin.
            shared.log.record(&self.wq, offset, sectors);
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
                r
            }
            StatusType::Table => table::write_table(
                out,
                origin,
                &self.features,
                &self.shared.log.config(),
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
            Message::Rotate => {
                let epoch = self.shared.log.rotate();
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
        }
        Ok(())
    }

    /// Background work stops once the device is suspended, and the dirty
    /// log is saved to the metadata device, if there is one.
    fn postsuspend(&self, _target: &Target) {
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
