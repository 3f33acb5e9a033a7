// SPDX-License-Identifier: GPL-2.0

//! The granularity controller (the seed's Dynamic Logging Manager):
//!
//! ```text
//! target = base + w_io * io_demand + w_dirty * predicted_dirty
//! target = clamp(target, min, max)
//! if |target - current| > hysteresis: current = target
//! ```
//!
//! `io_demand` is the device's write rate in MiB/s, measured in the kernel:
//! it follows a rise at once and decays slowly ([`Ewma`]).  `predicted_dirty` is the rate of newly dirtied
//! data in MiB/s: the prediction userspace gave, while it is fresh, else the
//! measured trend.  Weights are in thousandths of a level per MiB/s.

/// Controller parameters; all can be set as table arguments and at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Level with no I/O.
    pub base: u8,
    /// Thousandths of a level per MiB/s of writes.
    pub w_io: u32,
    /// Thousandths of a level per MiB/s of predicted newly dirtied data.
    pub w_dirty: u32,
    /// Lowest level the controller sets (0 lets it turn logging off).
    pub min: u8,
    /// Highest level the controller sets.
    pub max: u8,
    /// A change smaller than or equal to this is not applied.
    pub hysteresis: u8,
    /// Ticks a userspace prediction stays fresh.
    pub predict_ttl: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            base: 70,
            w_io: 3000,
            w_dirty: 4000,
            min: 1,
            max: 100,
            hysteresis: 10,
            predict_ttl: 10,
        }
    }
}

/// Why a parameter set was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// `min` is above `max`, or a level is above 100.
    Range,
}

impl Params {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.min > self.max || self.max > 100 || self.base > 100 || self.hysteresis > 100 {
            return Err(ParamError::Range);
        }
        Ok(())
    }

    /// The unclamped target level for the given rates (in milli-MiB/s).
    pub fn target(&self, io_milli: u64, dirty_milli: u64) -> u8 {
        let t = u64::from(self.base)
            + (u64::from(self.w_io) * io_milli + u64::from(self.w_dirty) * dirty_milli) / 1_000_000;
        t.clamp(u64::from(self.min), u64::from(self.max)) as u8
    }
}

/// A rate that rises at once and decays with weight 1/4 per sample ("fast
/// attack, slow release"): a burst of writes gets fine tracking from its
/// first period, and a pause does not coarsen it at once.  (Rising slowly
/// would coarsen the log at the start of every burst, and refining later
/// cannot win back the precision lost.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ewma(u64);

impl Ewma {
    /// Feeds one sample.
    pub fn add(&mut self, sample: u64) {
        self.0 = if sample >= self.0 {
            sample
        } else {
            self.0 - self.0 / 4 + sample / 4
        };
    }

    /// The average.
    pub fn get(&self) -> u64 {
        self.0
    }
}

/// The controller's state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Controller {
    /// Write rate in milli-MiB/s (decaying).
    pub io: Ewma,
    /// Newly dirtied data rate in milli-MiB/s (decaying): the trend.
    pub trend: Ewma,
    /// A prediction from userspace (milli-MiB/s) and ticks it stays fresh.
    predicted: Option<(u64, u32)>,
    /// The last target computed.
    pub last_target: u8,
}

const MIB: u64 = 1 << 20;

/// Milli-MiB/s of `bytes` over `ms` milliseconds.
pub fn rate_milli(bytes: u64, ms: u64) -> u64 {
    if ms == 0 {
        return 0;
    }
    (bytes.saturating_mul(1000) / MIB).saturating_mul(1000) / ms
}

impl Controller {
    /// Records a prediction of newly dirtied data, in bytes per second.
    pub fn predict(&mut self, bytes_per_sec: u64, ttl: u32) {
        self.predicted = Some((bytes_per_sec.saturating_mul(1000) / MIB, ttl));
    }

    /// The predicted-dirty input: a fresh prediction, else the trend.
    pub fn predicted_dirty(&self) -> u64 {
        match self.predicted {
            Some((p, ttl)) if ttl > 0 => p,
            _ => self.trend.get(),
        }
    }

    /// One tick: `written` bytes and `newly_dirty` bytes over `ms`
    /// milliseconds.  Returns the level to switch to, if the target moved
    /// beyond the hysteresis band around `current`.
    pub fn tick(
        &mut self,
        p: &Params,
        current: u8,
        written: u64,
        newly_dirty: u64,
        ms: u64,
    ) -> Option<u8> {
        self.io.add(rate_milli(written, ms));
        self.trend.add(rate_milli(newly_dirty, ms));
        if let Some((_, ttl)) = &mut self.predicted {
            *ttl = ttl.saturating_sub(1);
        }
        let target = p.target(self.io.get(), self.predicted_dirty());
        self.last_target = target;
        (target.abs_diff(current) > p.hysteresis).then_some(target)
    }
}
