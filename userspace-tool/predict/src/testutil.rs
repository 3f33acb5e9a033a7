//! Helpers shared by the unit tests of the predictors.

use crate::{Access, Op, Prediction, Predictor};

/// Lets `p` observe every access of `trace`, in order.
pub fn feed(p: &mut impl Predictor, trace: &[Access]) {
    for a in trace {
        p.observe(a);
    }
}

/// A one-block read of block `block`.
pub fn read(block: u64) -> Access {
    read_blocks(block, 1)
}

/// A read of `blocks` blocks from block `block`.
pub fn read_blocks(block: u64, blocks: u32) -> Access {
    Access {
        ts_ns: 0,
        sector: block * 8,
        sectors: blocks * 8,
        op: Op::Read,
    }
}

/// A prediction of `blocks` blocks from block `block`.
pub fn pred(block: u64, blocks: u64, probability: f64, op: Op) -> Prediction {
    Prediction::of_blocks(block, blocks, probability, op).unwrap()
}
