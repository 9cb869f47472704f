//! Versioned, backend-independent optimizer state records.
//!
//! Values are stored as exact `f32` (whatever the burn precision settings), keyed by
//! parameter path, so a record saved on one backend loads on another and resuming gives a
//! bitwise identical trajectory on CPU. Only stateful transforms are recorded, so changing a
//! stateless hyper-parameter (e.g. turning weight decay on) keeps old records loadable.

use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// Current record format version. Version 2 added `codes` (quantized state) and `scalars` to
/// [`TransformRecord`], version 3 [`OptimizerRecord::groups`] (group-level state, e.g.
/// Prodigy's `d`); older records still load through self-describing formats (JSON,
/// MessagePack); burn's binary recorders cannot decode them.
pub const RECORD_VERSION: u32 = 3;

/// Oldest record format version this build reads.
pub const MIN_RECORD_VERSION: u32 = 1;

/// The whole optimizer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerRecord {
    /// Format version ([`RECORD_VERSION`] when written by this crate).
    pub version: u32,
    /// Number of completed optimizer steps.
    pub steps: u64,
    /// Per-parameter state, sorted by path.
    pub params: Vec<ParamRecord>,
    /// Group-level state of the groups whose chains keep one, in group order (absent before
    /// version 3).
    #[serde(default)]
    pub groups: Vec<GroupRecord>,
}

/// One group's group-level state (see `Transform::group_sums`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group name.
    pub name: String,
    /// Group states of the chain's transforms that keep one, in chain order (counters and
    /// scalars only).
    pub transforms: Vec<TransformRecord>,
}

/// One parameter's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamRecord {
    /// Parameter path.
    pub path: String,
    /// Name of the group that owns it.
    pub group: String,
    /// Parameter shape.
    pub shape: Vec<usize>,
    /// States of the group chain's stateful transforms, in chain order.
    pub transforms: Vec<TransformRecord>,
}

/// One transform's state for one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformRecord {
    /// The transform's name (`scale_by_adam`, …).
    pub name: String,
    /// Named tensors.
    pub tensors: Vec<TensorRecord>,
    /// Named `u8` code tensors (quantized state; absent in records without any).
    #[serde(default)]
    pub codes: Vec<CodeRecord>,
    /// Named counters.
    pub counters: Vec<(String, u64)>,
    /// Named f64 scalars (absent in records without any).
    #[serde(default)]
    pub scalars: Vec<(String, f64)>,
}

/// A state tensor's exact values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// State name (`exp_avg`, …).
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// A code tensor's exact values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// State name (`state1`, …).
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Codes, row-major.
    pub values: Vec<u8>,
}

impl<B: Backend> Record<B> for OptimizerRecord {
    type Item<S: PrecisionSettings> = OptimizerRecord;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        self
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, _device: &B::Device) -> Self {
        item
    }
}
