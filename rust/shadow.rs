// SPDX-License-Identifier: GPL-2.0

//! The `foreshadow` target: a destination device the VM uses at once
//! while the data still on a source device (after a migration's switchover,
//! the source host's disk over NBD) is copied to it: the regions reads and
//! writes need first, then the ones the helper predicts, then the rest in
//! ascending order (see [`crate::logic::hydrate`]).
//!
//! ```text
//! <start> <len> foreshadow <metadata_dev> <destination_dev> <source_dev> <region_sectors>
//!     [<#feature_args> [no_hydration] [<#core_args> <key> <value>...]]
//! ```
//!
//! I/O, one region at a time (bios are split at region boundaries):
//!
//! - a read of a hydrated region goes to the destination; of a missing one,
//!   to the source, and the region becomes urgent;
//! - a write to a hydrated region goes to the destination.  A write that
//!   covers a whole missing region goes there too, and hydrates it when it
//!   completes.  Any other write waits until its region is copied: a
//!   region's data is then always wholly in one place, so no read mixes
//!   source and destination data, and the bitmap stays one bit a region
//!   (the trade dm-clone makes; a small write to a missing region costs a
//!   region copy first);
//! - a discard of a whole missing region marks it hydrated without a copy;
//!   every discard is passed down to the destination;
//! - a flush or a FUA write waits for a metadata commit while hydrated bits
//!   are not committed.
//!
//! Crash safety: a region's bit is set only once its copy (or the write
//! that covered it) has completed on the destination, and a commit flushes
//! the destination before it writes the bitmap blocks that changed and,
//! with FUA, the superblock.  A committed bit never names a region whose
//! data is not durable, and a flush completes only after the bits the data
//! it makes durable depends on are committed.  The metadata device holds a
//! 4 KiB superblock, then the bitmap, 4 KiB per 32768 regions.
//!
//! See `Documentation/admin-guide/device-mapper/foreshadow.rst`.

pub(crate) mod control;

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
        DeferList,
        Deferred,
        Device,
        DeviceVisitor,
        DmIo,
        EndIoResult,
        MapResult,
        NoIo,
        Op,
        OwnedQueue,
        QueueLimits,
        StatusType,
        StatusWriter,
        Stop,
        TableEvent,
        Target,
        TargetError,
        TargetOperations, //
    },
    genl,
    logic::{
        bucket::TokenBucket,
        hydrate::{
            bitmap_words,
            Batch,
            Claim,
            Counts,
            Hint,
            Hydration,
            Why,
            META_BLOCK_BYTES,
            META_BLOCK_REGIONS, //
            URGENT_MAX,
        },
        shadow::{
            self,
            RegionCrcs,
            ShadowConfig,
            ShadowError,
            ShadowMessage,
            ShadowSb,
            MAX_INFLIGHT, //
        },
    },
};
use core::{
    fmt::Write,
    sync::atomic::{
        AtomicU64,
        Ordering::Relaxed, //
    },
};
use kernel::{
    alloc::{
        KVVec,
        VVec, //
    },
    new_mutex, new_spinlock_irq,
    prelude::*,
    str::CString,
    sync::{
        Arc,
        Mutex,
        SpinLockIrq, //
    },
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        Delta, //
    },
    workqueue::{
        impl_has_delayed_work,
        impl_has_work,
        new_delayed_work,
        new_work,
        DelayedWork,
        Work,
        WorkItem, //
    },
};

/// Sectors of one metadata block.
const META_BLOCK_SECTORS: u64 = (META_BLOCK_BYTES >> 9) as u64;
/// Between periodic commits (and hydration-rate samples).
const COMMIT_MS: u32 = 1000;
/// User reads in flight to the source at which background copies back off.
const SOURCE_BUSY: u64 = 4;
/// Predicted ranges kept.
const MAX_HINTS: usize = 1024;
/// Longest pause after a failed copy.
const MAX_BACKOFF_MS: u32 = 5000;

/// What a bio did in `map`, for `end_io`.
#[derive(Clone, Copy, Default)]
pub(crate) struct PerBio {
    /// A read sent to the source.
    source: bool,
    /// A write covering the whole missing region `region`.
    overwrite: bool,
    region: u64,
}

struct State {
    h: Hydration<KVVec<u64>, KVVec<Hint>>,
    cfg: ShadowConfig,
    /// Writes waiting for their region.
    waiting: DeferList,
    /// Flushes and FUA writes waiting for a commit.
    durable: DeferList,
    /// Bios free to go: the service work submits them.
    ready: DeferList,
    /// Copiers queued or running, by bit.
    running: u32,
    /// Suspended, going away or not resumed yet: nothing is copied.
    stopped: bool,
    bucket: TokenBucket,
    /// Pause after a failed copy (0: none).
    backoff_ms: u32,
    /// Copies failed in a row (the pause doubles with each).
    fail_streak: u32,
    /// The completion event was raised.
    announced: bool,
    copy_errors: u64,
    commit_errors: u64,
    /// Bytes copied at the last rate sample, and the rate then (KiB/s).
    sampled: u64,
    rate_kbps: u64,
}

/// A commit's scratch: the bitmap blocks that changed, and the superblock.
struct CommitBuf {
    blocks: VVec<u8>,
    changed: KVVec<u32>,
    sb: VVec<u8>,
    commits: u64,
    /// The bitmap was read ([`Core::load_bitmap`]).
    loaded: bool,
}

/// What the target and its work items share.
#[pin_data]
pub(crate) struct Core {
    #[pin]
    state: SpinLockIrq<State>,
    /// Number of the mapped device (kernel `dev_t`).
    devt: u32,
    /// Order of the last resume among all shadow tables: of several tables
    /// of one mapped device, netlink uses the one resumed last.
    generation: AtomicU64,
    /// The metadata, destination and source devices (`major:minor`).
    names: [CString; 3],
    #[pin]
    commit_buf: Mutex<CommitBuf>,
    meta: Device,
    dest: Device,
    source: Device,
    io: DmIo,
    region_sectors: u64,
    region_shift: u32,
    len_sectors: u64,
    wq: OwnedQueue,
    event: Arc<TableEvent>,
    reads_dest: AtomicU64,
    reads_source: AtomicU64,
    source_inflight: AtomicU64,
    copied_bytes: AtomicU64,
    /// Checksums pushed from the source side (empty until the first).
    #[pin]
    crcs: Mutex<RegionCrcs<KVVec<u32>, KVVec<u64>>>,
    /// Regions whose copied data did not match their checksum.
    crc_mismatches: AtomicU64,
    /// The table's reservation of its source's bandwidth in the host's
    /// budget ([`crate::budget`]).
    budget: Held,
    #[pin]
    service: Work<Core, 0>,
    #[pin]
    tick: DelayedWork<Core, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Core { self.service }
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 1> for Core { self.tick }
}

/// Commits what waits for it, and submits the bios that may go.
impl WorkItem<0> for Core {
    type Pointer = Arc<Core>;

    fn run(this: Arc<Core>) {
        let _noio = NoIo::begin();
        this.serve();
    }
}

/// Every `COMMIT_MS`: commits, samples the rate, announces completion.
impl WorkItem<1> for Core {
    type Pointer = Arc<Core>;

    fn run(this: Arc<Core>) {
        let _noio = NoIo::begin();
        let clean = this.state.lock().h.is_clean();
        if !clean {
            let _ = this.commit();
        }
        let again = {
            let mut s = this.state.lock();
            let copied = this.copied_bytes.load(Relaxed);
            s.rate_kbps = (copied - s.sampled) * 1000 / u64::from(COMMIT_MS) / 1024;
            s.sampled = copied;
            !s.stopped
        };
        this.announce();
        if again {
            this.schedule_tick();
        }
    }
}

/// Where a held bio goes next.
enum Route {
    Ready,
    Durable,
    Wait,
    Fail,
}

impl Core {
    fn region_of(&self, sector: u64) -> u64 {
        sector >> self.region_shift
    }

    fn region_len(&self, r: u64) -> u64 {
        self.region_sectors
            .min(self.len_sectors - (r << self.region_shift))
    }

    /// With `verify_crc`, whether every region of batch `b` has its
    /// checksum (if not, it is not even read).
    fn checksums_known(&self, b: &Batch) -> Result<(), CopyFailed> {
        let verify_crc = self.state.lock().cfg.verify_crc;
        if verify_crc && !self.crcs.lock().all_known(b.start, b.len) {
            return Err(CopyFailed::NoChecksum);
        }
        Ok(())
    }

    /// Checks batch `b`, copied into `data`, against the checksums given.
    fn verify(&self, b: &Batch, data: &[u8]) -> Result<(), CopyFailed> {
        let crcs = self.crcs.lock();
        if crcs.is_empty() {
            return Ok(());
        }
        // The kernel's crc32c() leaves out the final inversion.
        let bad = crcs.mismatches(b.start, data, (self.region_sectors << 9) as usize, |d| {
            !dm::crc32c(d)
        });
        if bad > 0 {
            self.crc_mismatches.fetch_add(bad, Relaxed);
            return Err(CopyFailed::Checksum);
        }
        Ok(())
    }

    /// Regions `start ..` have checksums `crcs` (the storage for every
    /// region's is allocated with the first).
    fn set_crcs(&self, start: u64, crcs: &[u32], regions: u64) -> Result {
        if self.crcs.lock().is_empty() {
            let fresh = RegionCrcs::new(
                KVVec::from_elem(0u32, regions as usize, GFP_KERNEL)?,
                KVVec::from_elem(
                    0u64,
                    RegionCrcs::<KVVec<u32>, KVVec<u64>>::known_words(regions),
                    GFP_KERNEL,
                )?,
            );
            let mut g = self.crcs.lock();
            if g.is_empty() {
                *g = fresh;
            }
        }
        let mut g = self.crcs.lock();
        for (i, &crc) in crcs.iter().enumerate() {
            g.set(start + i as u64, crc);
        }
        Ok(())
    }

    fn schedule_tick(self: &Arc<Self>) {
        let _ = self
            .wq
            .queue()
            .enqueue_delayed::<_, 1>(self.clone(), msecs_to_jiffies(COMMIT_MS));
    }

    fn queue_service(self: &Arc<Self>) {
        let _ = self.wq.queue().enqueue::<_, 0>(self.clone());
    }

    /// Where held bio `bio` goes now (the state locked); writes to the
    /// regions of `failed` (a copy that failed) fail.
    fn route(s: &mut State, shift: u32, bio: &Deferred, failed: Option<Batch>) -> Route {
        if matches!(bio.op(), Op::Write | Op::WriteZeroes) && bio.size() > 0 {
            let r = bio.sector() >> shift;
            if failed.is_some_and(|b| b.start <= r && r < b.start + b.len) {
                return Route::Fail;
            }
            if s.h.claim_write(r, false) == Claim::Wait {
                return Route::Wait;
            }
        }
        if bio.is_durable() && !s.h.is_clean() {
            Route::Durable
        } else {
            Route::Ready
        }
    }

    /// Files `bio` by its route.
    fn file(s: &mut State, bio: Deferred, route: Route, fail: &mut DeferList) {
        match route {
            Route::Ready => s.ready.push(bio),
            Route::Durable => s.durable.push(bio),
            Route::Wait => s.waiting.push(bio),
            Route::Fail => fail.push(bio),
        }
    }

    /// Takes a bio `map` held.
    fn hold(self: &Arc<Self>, bio: Deferred) {
        let mut fail = DeferList::new();
        let serve = {
            let mut s = self.state.lock();
            let route = Self::route(&mut s, self.region_shift, &bio, None);
            Self::file(&mut s, bio, route, &mut fail);
            !s.ready.is_empty() || !s.durable.is_empty()
        };
        if serve {
            self.queue_service();
        }
    }

    /// Routes the waiting writes again (regions changed state); those to
    /// the regions of `failed` fail.
    fn release(self: &Arc<Self>, failed: Option<Batch>) {
        let mut fail = DeferList::new();
        let serve = {
            let mut s = self.state.lock();
            let mut waiting = core::mem::take(&mut s.waiting);
            while let Some(bio) = waiting.pop() {
                let route = Self::route(&mut s, self.region_shift, &bio, failed);
                Self::file(&mut s, bio, route, &mut fail);
            }
            !s.ready.is_empty() || !s.durable.is_empty()
        };
        // Failed (EIO) outside the lock.
        drop(fail);
        if serve {
            self.queue_service();
        }
    }

    /// The service work: a commit if flushes wait for one, then the bios
    /// that may go are submitted; again while more arrive.
    fn serve(self: &Arc<Self>) {
        loop {
            let (commit, mut ready) = {
                let mut s = self.state.lock();
                let commit = !s.durable.is_empty() || (s.h.is_complete() && !s.h.is_clean());
                (commit, core::mem::take(&mut s.ready))
            };
            while let Some(bio) = ready.pop() {
                bio.submit();
            }
            if !commit {
                break;
            }
            let _ = self.commit();
        }
        self.announce();
    }

    /// Writes the bitmap blocks that changed and the superblock, after a
    /// flush of the destination; then the flushes and FUA writes that
    /// waited for it go (or fail, if it failed).
    fn commit(self: &Arc<Self>) -> Result {
        let mut buf = self.commit_buf.lock();
        let CommitBuf {
            blocks,
            changed,
            sb,
            commits,
            ..
        } = &mut *buf;
        let (gen, n, mut waited, hydrated, regions) = {
            let mut s = self.state.lock();
            let waited = core::mem::take(&mut s.durable);
            let mut n = 0;
            let gen = s.h.take_dirty(|i, words| {
                let at = i * META_BLOCK_BYTES;
                for (k, w) in words.iter().enumerate() {
                    blocks[at + 8 * k..at + 8 * k + 8].copy_from_slice(&w.to_le_bytes());
                }
                changed[n] = i as u32;
                n += 1;
            });
            (gen, n, waited, s.h.hydrated_count(), s.h.regions())
        };
        let r = (|| -> Result {
            if n == 0 && waited.is_empty() {
                return Ok(());
            }
            self.io.flush(&self.dest)?;
            for &i in &changed[..n] {
                let i = i as usize;
                let sector = (1 + i as u64) * META_BLOCK_SECTORS;
                self.io.write_part(
                    &self.meta,
                    sector,
                    blocks,
                    i * META_BLOCK_BYTES,
                    META_BLOCK_BYTES,
                    false,
                )?;
            }
            sb.fill(0);
            ShadowSb {
                region_sectors: self.region_sectors as u32,
                regions,
                commits: *commits + 1,
                hydrated,
            }
            .encode(sb);
            self.io.write(&self.meta, 0, sb, true)?;
            *commits += 1;
            Ok(())
        })();
        {
            let mut s = self.state.lock();
            match r {
                Ok(()) => s.h.committed(gen),
                Err(_) => {
                    s.commit_errors += 1;
                    for &i in &changed[..n] {
                        s.h.commit_failed(i as usize);
                    }
                }
            }
        }
        drop(buf);
        while let Some(bio) = waited.pop() {
            if r.is_ok() {
                bio.submit();
            }
            // Dropped unsubmitted, it fails (EIO).
        }
        r
    }

    /// Raises the dm event once everything is hydrated and committed.
    fn announce(&self) {
        let now = {
            let mut s = self.state.lock();
            let due = s.h.is_complete() && s.h.is_clean() && !s.announced;
            s.announced |= due;
            due
        };
        if now {
            self.event.raise();
        }
    }
}

/// Why a copy failed.
#[derive(Clone, Copy, Debug)]
enum CopyFailed {
    /// Reading the source or writing the destination failed.
    Io,
    /// The data read did not match a region's checksum.
    Checksum,
    /// With `verify_crc`: a region's checksum is not known yet.
    NoChecksum,
}

impl CopyFailed {
    /// A copy error (counted, and the pause doubles): the source or the
    /// destination failed, not a checksum still to come.
    fn is_error(self) -> bool {
        !matches!(self, Self::NoChecksum)
    }
}

/// One copier: copies batches until none is left (its own buffer).
#[pin_data]
struct Copier {
    id: u32,
    core: Arc<Core>,
    #[pin]
    buf: Mutex<VVec<u8>>,
    #[pin]
    work: Work<Copier>,
}

impl_has_work! {
    impl HasWork<Self> for Copier { self.work }
}

impl WorkItem for Copier {
    type Pointer = Arc<Copier>;

    fn run(this: Arc<Copier>) {
        let _noio = NoIo::begin();
        this.copy_all();
    }
}

impl Copier {
    /// Backs off (a few ms, not a stop) while the VM's reads keep the
    /// source busy: background batches only.
    fn back_off(&self, b: &Batch) {
        let mut waited = 0;
        while b.why != Why::Urgent
            && waited < 10
            && self.core.source_inflight.load(Relaxed) >= SOURCE_BUSY
        {
            fsleep(Delta::from_millis(1));
            waited += 1;
        }
    }

    /// Bytes of batch `b`.
    fn bytes(&self, b: &Batch) -> u64 {
        let c = &*self.core;
        let sector = b.start << c.region_shift;
        (b.len << c.region_shift).min(c.len_sectors - sector) << 9
    }

    fn copy(&self, b: &Batch) -> Result<u64, CopyFailed> {
        let c = &*self.core;
        let sector = b.start << c.region_shift;
        let bytes = self.bytes(b) as usize;
        c.checksums_known(b)?;
        self.back_off(b);
        let mut buf = self.buf.lock();
        c.io.read_part(&c.source, sector, &mut buf, 0, bytes)
            .map_err(|_| CopyFailed::Io)?;
        c.verify(b, &buf[..bytes])?;
        c.io.write_part(&c.dest, sector, &mut buf, 0, bytes, false)
            .map_err(|_| CopyFailed::Io)?;
        Ok(bytes as u64)
    }

    /// The next batch: an urgent one at once; a background one once the
    /// bandwidth limit allows a whole batch, chosen then (so that a hint
    /// that came while this copier waited goes first).  `Err(ns)`: wait
    /// that long and ask again; `Ok(None)`: nothing to copy.
    /// The next urgent batch, if any (none while stopped: in postsuspend
    /// no I/O is in flight and none waits for a copy, and a failed urgent
    /// copy stays urgent, so copying on would retry it until the source
    /// heals, with the suspend waiting for that).
    fn urgent(&self, s: &mut State) -> Option<Batch> {
        if s.stopped {
            return None;
        }
        let max = s.cfg.batch_for(self.core.region_sectors as u32);
        s.h.next_batch(max, false)
    }

    fn next(&self) -> Result<Option<Batch>, u64> {
        let c = &*self.core;
        // Not under the state lock, which is a spinlock.
        let no_crcs = c.crcs.lock().is_empty();
        let mut s = c.state.lock();
        if self.id >= s.cfg.inflight || s.stopped {
            return Ok(None);
        }
        if let Some(b) = self.urgent(&mut s) {
            return Ok(Some(b));
        }
        // With verify_crc, background copying waits for the first checksums.
        if s.cfg.no_hydration || s.backoff_ms != 0 || (s.cfg.verify_crc && no_crcs) {
            return Ok(None);
        }
        let max = s.cfg.batch_for(c.region_sectors as u32);
        let rate = u64::from(s.cfg.bandwidth_kbps) * 1024;
        let now = dm::monotonic_ns();
        let full = (max << c.region_shift) << 9;
        let wait = s.bucket.wait_ns(now, rate, full);
        if wait > 0 {
            return Err(wait);
        }
        let b = s.h.next_batch(max, true);
        if let Some(b) = &b {
            let bytes = self.bytes(b);
            s.bucket.take(now, rate, bytes);
        }
        Ok(b)
    }

    /// Batch `b` was copied (`Ok(bytes)`) or not: its regions are
    /// hydrated, or missing again (fetched again later) and the writes
    /// waiting for them fail, whatever the reason: a write kept waiting
    /// for a copy that may never succeed (a source that corrupts the region
    /// every time, a checksum that never comes) would also keep a suspend
    /// waiting, which dm does before it calls postsuspend.
    fn done(&self, b: Batch, copied: Result<u64, CopyFailed>) {
        let c = &self.core;
        c.state.lock().h.copy_done(b, copied.is_ok());
        match copied {
            Ok(bytes) => {
                c.copied_bytes.fetch_add(bytes, Relaxed);
                c.release(None);
            }
            Err(_) => c.release(Some(b)),
        }
    }

    fn copy_all(self: &Arc<Self>) {
        let c = &self.core;
        let bit = 1u32 << self.id;
        loop {
            let b = match self.next() {
                Ok(Some(b)) => b,
                Ok(None) => {
                    // Under the lock: a kick that finds the bit still set
                    // knows this copier will look again.
                    let mut s = c.state.lock();
                    match self.urgent(&mut s) {
                        Some(b) => {
                            drop(s);
                            b
                        }
                        None => {
                            s.running &= !bit;
                            return;
                        }
                    }
                }
                Err(wait_ns) => {
                    fsleep(Delta::from_micros((wait_ns / 1000).clamp(1, 100_000) as i64));
                    continue;
                }
            };
            // Failed, and whether that counts as a copy error.
            let mut failed = false;
            let mut error = false;
            match self.copy(&b) {
                Ok(bytes) => self.done(b, Ok(bytes)),
                // One bad region must not keep its batch's good ones
                // missing: they are copied one by one.
                Err(_) if b.len > 1 => {
                    for r in b.start..b.start + b.len {
                        let one = Batch {
                            start: r,
                            len: 1,
                            why: b.why,
                        };
                        let copied = self.copy(&one);
                        failed |= copied.is_err();
                        error |= copied.is_err_and(CopyFailed::is_error);
                        self.done(one, copied);
                    }
                }
                Err(e) => {
                    failed = true;
                    error = e.is_error();
                    self.done(b, Err(e));
                }
            }
            let (complete, backoff) = {
                let mut s = c.state.lock();
                if error {
                    // 100 ms, doubling with each failure in a row.
                    s.copy_errors += 1;
                    s.fail_streak = (s.fail_streak + 1).min(16);
                    s.backoff_ms = (100u32 << (s.fail_streak - 1).min(8)).min(MAX_BACKOFF_MS);
                } else if failed {
                    // Only checksums still to come: the source is fine.
                    s.backoff_ms = 100;
                } else {
                    s.fail_streak = 0;
                    s.backoff_ms = 0;
                }
                (s.h.is_complete(), s.backoff_ms)
            };
            if complete {
                c.queue_service();
            }
            if backoff > 0 {
                // Urgent regions wait too: the source is failing.
                fsleep(Delta::from_millis(i64::from(backoff)));
                c.state.lock().backoff_ms = 0;
            }
        }
    }
}

/// See the [module docs](self).
pub(crate) struct Shadow {
    core: Arc<Core>,
    copiers: KVec<Arc<Copier>>,
}

/// The shadow devices the netlink operations ([`control`]) reach: every
/// table's [`Core`], from its constructor to its destructor.
pub(crate) static SHADOWS: genl::Registry<Core> =
    genl::Registry::new(c"foreshadow_devices", kernel::static_lock_class!());

/// Counts resumes, for [`Core::generation`].
static RESUMES: AtomicU64 = AtomicU64::new(0);

/// What a hydration is doing (the status line's last field).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Idle,
    Hydrating,
    Backoff,
    Stopped,
    Complete,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Hydrating => "hydrating",
            Mode::Backoff => "backoff",
            Mode::Stopped => "stopped",
            Mode::Complete => "complete",
        }
    }
}

/// The counters of the status line and of netlink's `shadow-get`, read
/// under one lock.
pub(crate) struct Report {
    hydrated: u64,
    regions: u64,
    copying: u64,
    counts: Counts,
    reads_dest: u64,
    reads_source: u64,
    copied_bytes: u64,
    rate_kbps: u64,
    waiting_writes: u64,
    copy_errors: u64,
    commit_errors: u64,
    crc_mismatches: u64,
    hints: u64,
    mode: Mode,
}

fn nomem<E>(_: E) -> TargetError {
    TargetError {
        code: ENOMEM,
        message: c"Cannot allocate the shadow context",
    }
}

fn invalid(e: ShadowError) -> TargetError {
    TargetError::invalid(e.message())
}

fn open(ctor: &Ctor<'_>, path: &CStr, what: &'static CStr) -> Result<Device, TargetError> {
    Device::open(ctor, path).map_err(|e| TargetError {
        code: e,
        message: what,
    })
}

/// Checks the metadata's superblock (one for this region size and length,
/// or all zero: then formats the device).  The bitmap is read at the first
/// resume ([`Core::load_bitmap`]).
fn check_meta(
    io: &DmIo,
    meta: &Device,
    regions: u64,
    region_sectors: u32,
    blocks: &mut VVec<u8>,
    sb: &mut VVec<u8>,
) -> Result<(), TargetError> {
    let ioerr = |_| TargetError {
        code: EIO,
        message: c"Cannot read or write the metadata device",
    };
    io.read(meta, 0, sb).map_err(ioerr)?;
    match ShadowSb::decode(sb) {
        Ok(None) => {
            // A new device: the bitmap zeroed, then the superblock.
            blocks.fill(0);
            let len = blocks.len();
            io.write_part(meta, META_BLOCK_SECTORS, blocks, 0, len, false)
                .map_err(ioerr)?;
            sb.fill(0);
            ShadowSb {
                region_sectors,
                regions,
                commits: 0,
                hydrated: 0,
            }
            .encode(sb);
            io.write(meta, 0, sb, true).map_err(ioerr)
        }
        Ok(Some(s)) if s.region_sectors == region_sectors && s.regions == regions => Ok(()),
        Ok(Some(_)) => Err(TargetError::invalid(
            c"The metadata is for another region size or device length",
        )),
        Err(_) => Err(TargetError::invalid(
            c"Not foreshadow metadata (zero its first 4 KiB to format it)",
        )),
    }
}

impl Core {
    /// Reads the committed bitmap, at the table's first resume: a table
    /// this one replaces (a reload) hydrates until it is suspended, and
    /// commits then, so the bitmap read at construction could be stale.
    fn load_bitmap(&self) -> Result {
        let mut buf = self.commit_buf.lock();
        let CommitBuf {
            blocks,
            sb,
            commits,
            loaded,
            ..
        } = &mut *buf;
        if *loaded {
            return Ok(());
        }
        self.io.read(&self.meta, 0, sb)?;
        let s = ShadowSb::decode(sb).ok().flatten().ok_or(EINVAL)?;
        let len = blocks.len();
        self.io
            .read_part(&self.meta, META_BLOCK_SECTORS, blocks, 0, len)?;
        let mut words = KVVec::from_elem(0u64, META_BLOCK_BYTES / 8, GFP_KERNEL)?;
        for i in 0..len / META_BLOCK_BYTES {
            for (k, w) in words.iter_mut().enumerate() {
                let at = i * META_BLOCK_BYTES + 8 * k;
                let mut b = [0u8; 8];
                b.copy_from_slice(&blocks[at..at + 8]);
                *w = u64::from_le_bytes(b);
            }
            self.state.lock().h.load_block(i, &words);
        }
        *commits = s.commits;
        *loaded = true;
        Ok(())
    }
}

impl Shadow {
    /// Starts copiers up to the in-flight cap (those not running).
    fn kick(&self) {
        let start = Self::to_start(&mut self.core.state.lock());
        self.start(start);
    }

    /// Marks running the copiers up to the in-flight cap that are not
    /// (the state locked); [`Shadow::start`] queues them.
    fn to_start(s: &mut State) -> u32 {
        let mut start = 0u32;
        if s.h.is_complete() {
            return 0;
        }
        for i in 0..s.cfg.inflight.min(MAX_INFLIGHT) {
            if s.running & (1 << i) == 0 {
                s.running |= 1 << i;
                start |= 1 << i;
            }
        }
        start
    }

    fn start(&self, start: u32) {
        for c in &self.copiers {
            if start & (1 << c.id) != 0 {
                let _ = self.core.wq.queue().enqueue(c.clone());
            }
        }
    }

    /// Stops background copying and waits for the copiers; commits.
    fn quiesce(&self) {
        self.core.state.lock().stopped = true;
        // A copier still copying finishes its batch; none starts another.
        // (Urgent copies only come with I/O, and a suspended device has
        // none: the writes that waited for a copy were let go, or failed
        // with it, before dm called postsuspend.)
        self.core.wq.flush();
        dm::flush_delayed::<_, 1>(&*self.core);
        let _ = self.core.commit();
    }

    fn write_info(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let r = self.core.report();
        let n = r.counts;
        write!(
            out,
            "{} {}/{} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.core.region_sectors,
            r.hydrated,
            r.regions,
            r.copying,
            n.urgent,
            n.predicted,
            n.ascending,
            n.overwritten,
            n.marked,
            r.reads_dest,
            r.reads_source,
            r.copied_bytes / 1024,
            r.rate_kbps,
            r.waiting_writes,
            r.copy_errors,
            r.commit_errors,
            r.crc_mismatches,
            r.hints,
            r.mode.name()
        )
    }
}

impl Core {
    /// The counters, read under one lock.
    fn report(&self) -> Report {
        let s = self.state.lock();
        let mode = if s.h.is_complete() {
            Mode::Complete
        } else if s.stopped {
            Mode::Stopped
        } else if s.backoff_ms > 0 {
            Mode::Backoff
        } else if s.running != 0 {
            Mode::Hydrating
        } else {
            Mode::Idle
        };
        Report {
            hydrated: s.h.hydrated_count(),
            regions: s.h.regions(),
            copying: s.h.busy_count(),
            counts: s.h.counts(),
            reads_dest: self.reads_dest.load(Relaxed),
            reads_source: self.reads_source.load(Relaxed),
            copied_bytes: self.copied_bytes.load(Relaxed),
            rate_kbps: s.rate_kbps,
            waiting_writes: s.waiting.len() as u64,
            copy_errors: s.copy_errors,
            commit_errors: s.commit_errors,
            crc_mismatches: self.crc_mismatches.load(Relaxed),
            hints: s.h.hints_len() as u64,
            mode,
        }
    }
}

impl Drop for Shadow {
    /// Out of the registry (waiting for a netlink operation that uses it);
    /// copiers stopped and the state committed before the devices go.
    fn drop(&mut self) {
        if let Some(mut list) = SHADOWS.lock() {
            list.retain(|c| !Arc::ptr_eq(c, &self.core));
        }
        self.quiesce();
    }
}

#[vtable]
impl TargetOperations for Shadow {
    const NAME: &'static CStr = c"foreshadow";
    const VERSION: [u32; 3] = [0, 1, 0];

    type PerBio = PerBio;

    fn ctr(ctor: &mut Ctor<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, TargetError> {
        let line = shadow::parse_line(args.words()).map_err(invalid)?;
        let path = |i| args.get(i).ok_or(invalid(ShadowError::Args));
        let meta = open(ctor, path(0)?, c"Cannot open the metadata device")?;
        let dest = open(ctor, path(1)?, c"Cannot open the destination device")?;
        let source = open(ctor, path(2)?, c"Cannot open the source device")?;
        let len = ctor.len_sectors();
        if dest.nr_sectors() < len {
            return Err(TargetError::invalid(
                c"The destination device is smaller than the target",
            ));
        }
        if source.nr_sectors() < len {
            return Err(TargetError::invalid(
                c"The source device is smaller than the target",
            ));
        }
        let region_sectors = u64::from(line.region_sectors);
        // A shift, not a division: no division-by-zero panic path (which
        // objtool cannot follow).
        let region_shift = region_sectors.trailing_zeros();
        let regions = (len + region_sectors - 1) >> region_shift;
        let meta_blocks = regions.div_ceil(META_BLOCK_REGIONS);
        if meta.nr_sectors() < (1 + meta_blocks) * META_BLOCK_SECTORS {
            return Err(TargetError::invalid(
                c"Metadata device too small: it needs 4 KiB plus 4 KiB per 32768 regions",
            ));
        }
        let words = bitmap_words(regions);
        let h = Hydration::new(
            regions,
            KVVec::from_elem(0u64, words, GFP_KERNEL).map_err(nomem)?,
            KVVec::from_elem(0u64, words, GFP_KERNEL).map_err(nomem)?,
            KVVec::from_elem(0u64, (meta_blocks as usize).div_ceil(64), GFP_KERNEL)
                .map_err(nomem)?,
            KVVec::from_elem(0u64, URGENT_MAX, GFP_KERNEL).map_err(nomem)?,
            KVVec::from_elem(Hint::default(), MAX_HINTS, GFP_KERNEL).map_err(nomem)?,
        )
        .map_err(|_| TargetError::invalid(c"Too many regions"))?;
        let io = DmIo::new().map_err(nomem)?;
        let mut blocks = VVec::from_elem(0u8, meta_blocks as usize * META_BLOCK_BYTES, GFP_KERNEL)
            .map_err(nomem)?;
        let mut sb = VVec::from_elem(0u8, META_BLOCK_BYTES, GFP_KERNEL).map_err(nomem)?;
        check_meta(
            &io,
            &meta,
            regions,
            line.region_sectors,
            &mut blocks,
            &mut sb,
        )?;
        ctor.set_max_io_len(region_sectors).map_err(|_| {
            TargetError::invalid(c"The target length is not a whole number of regions")
        })?;
        ctor.set_num_flush_bios(1);
        // Flushes and FUA must reach the target even over devices without
        // a volatile cache: a write to a newly hydrated region is durable
        // only once that region's bit is committed.
        ctor.set_flush_supported();
        ctor.set_num_discard_bios(1);
        ctor.set_num_write_zeroes_bios(1);
        let event = ctor.table_event().map_err(nomem)?;
        let name = |d: &Device| CString::try_from_fmt(fmt!("{}", d.name().to_str().unwrap_or("?")));
        let names = [
            name(&meta).map_err(nomem)?,
            name(&dest).map_err(nomem)?,
            name(&source).map_err(nomem)?,
        ];
        let devt = ctor.md_devt();
        let budget =
            Held::new(devt, source.devt(), 0, line.cfg.bandwidth_kbps).map_err(|r| TargetError {
                code: r.code(),
                message: if r == Refused::Bandwidth {
                    c"bandwidth_kbps is over the host's bandwidth budget for the source (0 is no limit; see foresight budget)"
                } else {
                    c"Cannot reserve from the host's budget"
                },
            })?;
        let shared = Arc::pin_init(
            try_pin_init!(Core {
                state <- new_spinlock_irq!(State {
                    h,
                    cfg: line.cfg,
                    waiting: DeferList::new(),
                    durable: DeferList::new(),
                    ready: DeferList::new(),
                    running: 0,
                    stopped: false,
                    bucket: TokenBucket::new(),
                    backoff_ms: 0,
                    fail_streak: 0,
                    announced: false,
                    copy_errors: 0,
                    commit_errors: 0,
                    sampled: 0,
                    rate_kbps: 0,
                }),
                commit_buf <- new_mutex!(CommitBuf {
                    blocks,
                    changed: KVVec::from_elem(0u32, meta_blocks as usize, GFP_KERNEL)?,
                    sb,
                    commits: 0,
                    loaded: false,
                }),
                devt,
                generation: AtomicU64::new(0),
                names,
                meta,
                dest,
                source,
                io,
                region_sectors,
                region_shift,
                len_sectors: len,
                wq: OwnedQueue::new(c"fshydr", *devt)?,
                event,
                reads_dest: AtomicU64::new(0),
                reads_source: AtomicU64::new(0),
                source_inflight: AtomicU64::new(0),
                copied_bytes: AtomicU64::new(0),
                crcs <- new_mutex!(RegionCrcs::new(KVVec::new(), KVVec::new())),
                crc_mismatches: AtomicU64::new(0),
                budget,
                service <- new_work!("Shadow::service"),
                tick <- new_delayed_work!("Shadow::tick"),
            }? Error),
            GFP_KERNEL,
        )
        .map_err(nomem)?;
        let batch_bytes =
            (shared.state.lock().cfg.batch_for(line.region_sectors) * region_sectors) << 9;
        let mut copiers = KVec::with_capacity(MAX_INFLIGHT as usize, GFP_KERNEL).map_err(nomem)?;
        for id in 0..MAX_INFLIGHT {
            let owner = shared.clone();
            let c = Arc::pin_init(
                try_pin_init!(Copier {
                    id,
                    core: owner,
                    buf <- new_mutex!(VVec::from_elem(0u8, batch_bytes as usize, GFP_KERNEL)?),
                    work <- new_work!("Shadow::copier"),
                }? Error),
                GFP_KERNEL,
            )
            .map_err(nomem)?;
            copiers.push(c, GFP_KERNEL).map_err(nomem)?;
        }
        // Stopped until the first resume.
        shared.state.lock().stopped = true;
        let me = KBox::pin(
            Shadow {
                core: shared,
                copiers,
            },
            GFP_KERNEL,
        )
        .map_err(nomem)?;
        // Dropping `Shadow` takes the device out of the registry again.
        SHADOWS
            .lock()
            .ok_or(ENODEV)
            .and_then(|mut list| Ok(list.push(me.core.clone(), GFP_KERNEL)?))
            .map_err(nomem)?;
        Ok(me)
    }

    fn map(&self, _target: &Target, bio: &mut Bio<'_, PerBio>) -> MapResult {
        let c = &*self.core;
        let offset = bio.target_offset();
        let sectors = u64::from(bio.sectors());
        let r = c.region_of(offset);
        let op = if sectors == 0 && bio.is_preflush() {
            Op::Flush
        } else {
            bio.op()
        };
        match op {
            Op::Read => {
                // One lock: the claim, and the copiers a source read starts.
                let (on_dest, start) = {
                    let mut s = c.state.lock();
                    let on_dest = s.h.claim_read(r);
                    (on_dest, if on_dest { 0 } else { Self::to_start(&mut s) })
                };
                if on_dest {
                    c.reads_dest.fetch_add(1, Relaxed);
                    bio.remap(&c.dest, offset);
                } else {
                    c.reads_source.fetch_add(1, Relaxed);
                    c.source_inflight.fetch_add(1, Relaxed);
                    bio.per_bio().source = true;
                    bio.remap(&c.source, offset);
                    self.start(start);
                }
                MapResult::Remapped
            }
            Op::Write | Op::WriteZeroes => {
                let durable = bio.is_fua() || bio.is_preflush();
                // A write that must be durable when it completes is not
                // let hydrate its region: its bit would be committed later.
                let whole =
                    !durable && offset & (c.region_sectors - 1) == 0 && sectors == c.region_len(r);
                bio.remap(&c.dest, offset);
                let (claim, clean) = {
                    let mut s = c.state.lock();
                    (s.h.claim_write(r, whole), s.h.is_clean())
                };
                match claim {
                    Claim::Dest if durable && !clean => MapResult::Defer,
                    Claim::Dest => MapResult::Remapped,
                    Claim::Overwrite => {
                        let pb = bio.per_bio();
                        pb.overwrite = true;
                        pb.region = r;
                        MapResult::Remapped
                    }
                    Claim::Wait => {
                        self.kick();
                        MapResult::Defer
                    }
                }
            }
            Op::Flush => {
                bio.remap(&c.dest, offset);
                if c.state.lock().h.is_clean() {
                    MapResult::Remapped
                } else {
                    MapResult::Defer
                }
            }
            Op::Discard => {
                if offset & (c.region_sectors - 1) == 0 && sectors == c.region_len(r) {
                    c.state.lock().h.mark(r, 1);
                }
                bio.remap(&c.dest, offset);
                MapResult::Remapped
            }
            _ => MapResult::Kill,
        }
    }

    fn defer(&self, _target: &Target, bio: Deferred) {
        self.core.hold(bio);
    }

    fn end_io(
        &self,
        _target: &Target,
        bio: &mut Bio<'_, PerBio>,
        status: &mut BlkStatus,
    ) -> EndIoResult {
        let pb = *bio.per_bio();
        let c = &self.core;
        if pb.source {
            c.source_inflight.fetch_sub(1, Relaxed);
        }
        if pb.overwrite {
            c.state.lock().h.overwrite_done(pb.region, status.is_ok());
            c.release(None);
            if !status.is_ok() {
                self.kick();
            }
        }
        EndIoResult::Done
    }

    fn status(&self, _target: &Target, kind: StatusType, out: &mut StatusWriter<'_>) {
        let n = |i: usize| self.core.names[i].to_str().unwrap_or("?");
        let _ = match kind {
            StatusType::Info => self.write_info(out),
            StatusType::Table => {
                let cfg = self.core.state.lock().cfg;
                shadow::write_table(out, [n(0), n(1), n(2)], self.core.region_sectors as u32, &cfg)
            }
            StatusType::Ima => write!(
                out,
                "target_name={},target_version={}.{}.{},metadata={},destination={},source={},region_sectors={};",
                Self::NAME.to_str().unwrap_or("?"),
                Self::VERSION[0],
                Self::VERSION[1],
                Self::VERSION[2],
                n(0),
                n(1),
                n(2),
                self.core.region_sectors,
            ),
        };
    }

    fn message(
        &self,
        _target: &Target,
        args: Args<'_>,
        _out: &mut StatusWriter<'_>,
    ) -> Result<(), TargetError> {
        let c = &self.core;
        match shadow::parse_message(args.words()).map_err(invalid)? {
            ShadowMessage::Hydration(on) => c.state.lock().cfg.no_hydration = !on,
            ShadowMessage::Set(k, v) => {
                // The limit it would leave, for the host's budget; then the
                // change itself under one hold of the state's lock.
                let mut want = c.state.lock().cfg;
                want.set(k, v).map_err(invalid)?;
                let apply = || {
                    let mut s = c.state.lock();
                    let mut cfg = s.cfg;
                    cfg.set(k, v).map_err(invalid)?;
                    // The copy buffers were sized at construction.
                    if cfg.batch_for(c.region_sectors as u32)
                        > s.cfg.batch_for(c.region_sectors as u32)
                    {
                        return Err(TargetError::invalid(
                            c"batch_regions can only shrink at run time (reload the table)",
                        ));
                    }
                    s.cfg = cfg;
                    Ok(())
                };
                c.budget
                    .change(0, want.bandwidth_kbps, apply, || {
                        (0, c.state.lock().cfg.bandwidth_kbps)
                    })
                    .map_err(|r| TargetError {
                        code: r.code(),
                        message:
                            c"bandwidth_kbps is over the host's bandwidth budget for the source",
                    })??;
            }
            ShadowMessage::Hint(words) => {
                let mut hints = KVec::new();
                for h in shadow::parse_hints(words) {
                    let h = h.ok_or(invalid(ShadowError::Message))?;
                    if hints.len() < MAX_HINTS {
                        hints.push(h, GFP_KERNEL).map_err(nomem)?;
                    }
                }
                c.state.lock().h.set_hints(hints.iter().copied());
            }
            ShadowMessage::Crc(start, words) => {
                let regions = c.state.lock().h.regions();
                let mut crcs = KVec::new();
                for w in words {
                    let crc = shadow::parse_crc(w).ok_or(invalid(ShadowError::Message))?;
                    crcs.push(crc, GFP_KERNEL).map_err(nomem)?;
                }
                if crcs.is_empty() || start.saturating_add(crcs.len() as u64) > regions {
                    return Err(TargetError::invalid(
                        c"crc <region> <crc32c>...: at least one checksum, of regions of the device",
                    ));
                }
                c.set_crcs(start, &crcs, regions).map_err(nomem)?;
            }
            ShadowMessage::Mark(words) => {
                let mut marks = KVec::new();
                for m in shadow::parse_marks(words) {
                    let m = m.ok_or(invalid(ShadowError::Message))?;
                    marks.push(m, GFP_KERNEL).map_err(nomem)?;
                }
                // One range a lock hold, as one `mark` was.
                for &(start, len) in marks.iter() {
                    c.state.lock().h.mark(start, len);
                }
                c.release(None);
                c.queue_service();
            }
        }
        self.kick();
        Ok(())
    }

    /// Background copying stops; the hydrated bitmap is committed.
    fn postsuspend(&self, _target: &Target) {
        self.quiesce();
    }

    /// The bitmap is read at the first resume (see [`Core::load_bitmap`]).
    fn preresume(&self, _target: &Target) -> Result {
        self.core.load_bitmap()
    }

    fn resume(&self, _target: &Target) {
        let g = RESUMES.fetch_add(1, Relaxed) + 1;
        self.core.generation.store(g, Relaxed);
        self.core.state.lock().stopped = false;
        self.core.schedule_tick();
        self.kick();
    }

    fn iterate_devices(
        &self,
        target: &Target,
        visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), Stop> {
        visitor.visit(&self.core.dest, 0, target.len_sectors())?;
        visitor.visit(&self.core.source, 0, target.len_sectors())
    }

    /// Like dm-clone: a region is the optimal I/O size.
    fn io_hints(&self, _target: &Target, limits: &mut QueueLimits) {
        let region = (self.core.region_sectors << 9) as u32;
        if limits.io_opt() < region || limits.io_opt() & (region - 1) != 0 {
            limits.set_io_opt(region);
        }
    }
}
