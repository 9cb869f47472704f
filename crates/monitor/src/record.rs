//! What the monitor records per step: the data every sink, plot and report reads.
//!
//! Non-finite floats are written as JSON `null` and read back as `NaN`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `f64` that reads JSON `null` (how serde_json writes NaN and ±Inf) as `NaN`.
pub(crate) fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A map of `f64` whose `null` values (non-finite when written) read back as `NaN`.
fn nan_if_null_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    Ok(BTreeMap::<String, Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Statistics of one named optimizer-state tensor of one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateStats {
    /// State name as the optimizer keeps it (`exp_avg`, `exp_avg_sq`, `absmax1`, …).
    pub name: String,
    /// Elements.
    pub numel: u64,
    /// ‖s‖₂.
    #[serde(deserialize_with = "nan_if_null")]
    pub norm: f64,
    /// ‖√s‖₂ = √Σs for a non-negative state (second moments), `None` otherwise.
    pub sqrt_norm: Option<f64>,
    /// Smallest element.
    #[serde(deserialize_with = "nan_if_null")]
    pub min: f64,
    /// Largest element.
    #[serde(deserialize_with = "nan_if_null")]
    pub max: f64,
}

/// Norms of one parameter at one observed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamStats {
    /// Parameter path.
    pub path: String,
    /// Parameter group.
    pub group: String,
    /// Layer the parameter is aggregated into (see [`LayerKey`](crate::LayerKey)).
    pub layer: String,
    /// Elements.
    pub numel: u64,
    /// ‖g‖₂ of the gradient the optimizer consumed (after clipping and the non-finite policy).
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// ‖θ‖₂ after the update.
    #[serde(deserialize_with = "nan_if_null")]
    pub weight_norm: f64,
    /// ‖Δθ‖₂ of the applied update.
    #[serde(deserialize_with = "nan_if_null")]
    pub update_norm: f64,
    /// ‖Δθ‖ / ‖θ‖ (0 when ‖θ‖ = 0).
    #[serde(deserialize_with = "nan_if_null")]
    pub update_to_weight: f64,
    /// ⟨Δθ, g⟩ (the update's inner product with the gradient; negative for descent).
    #[serde(deserialize_with = "nan_if_null")]
    pub update_dot_grad: f64,
    /// cos(Δθ, g) (0 when either is zero): −1 is plain gradient descent's direction.
    #[serde(deserialize_with = "nan_if_null")]
    pub cos_update_grad: f64,
    /// Each state tensor's statistics (empty when state statistics are off).
    pub states: Vec<StateStats>,
}

/// Per-layer aggregate of [`ParamStats`]: norms combine as √Σ‖·‖², the cosine as
/// Σ⟨Δθ, g⟩ / (‖Δθ‖‖g‖) over the layer's concatenated tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Layer key.
    pub layer: String,
    /// Parameters aggregated.
    pub params: u32,
    /// Elements.
    pub numel: u64,
    /// ‖g‖₂ over the layer.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// ‖θ‖₂ over the layer.
    #[serde(deserialize_with = "nan_if_null")]
    pub weight_norm: f64,
    /// ‖Δθ‖₂ over the layer.
    #[serde(deserialize_with = "nan_if_null")]
    pub update_norm: f64,
    /// ‖Δθ‖ / ‖θ‖ over the layer.
    #[serde(deserialize_with = "nan_if_null")]
    pub update_to_weight: f64,
    /// cos(Δθ, g) over the layer.
    #[serde(deserialize_with = "nan_if_null")]
    pub cos_update_grad: f64,
}

/// Memory at one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// Exact optimizer-state bytes (moment-optim's accounting).
    pub state_bytes: u64,
    /// State bytes by kind (`exp_avg`, `exp_avg_sq`, `state1`, …).
    pub state_by_kind: BTreeMap<String, u64>,
    /// Elements of the parameters that have optimizer state.
    pub param_elements: u64,
    /// Bytes of those parameters.
    pub param_bytes: u64,
    /// Bytes of their gradients (one gradient per parameter, same element type).
    pub grad_bytes: u64,
    /// Peak resident set size of the process so far (Linux `VmHWM`; `None` elsewhere).
    pub peak_rss_bytes: Option<u64>,
    /// Resident set size at the end of the step (Linux `VmRSS`; `None` elsewhere).
    #[serde(default)]
    pub rss_bytes: Option<u64>,
}

/// Which series a spike was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpikeMetric {
    /// The training loss.
    Loss,
    /// The global gradient norm before clipping.
    GradNorm,
}

/// A detected spike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    /// Step it happened at.
    pub step: u64,
    /// Series.
    pub metric: SpikeMetric,
    /// The value (`NaN` for a non-finite one).
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// Rolling median it was compared with.
    #[serde(deserialize_with = "nan_if_null")]
    pub median: f64,
    /// Robust z-score `(value − median) / (1.4826 · MAD)` (`NaN` for a non-finite value).
    #[serde(deserialize_with = "nan_if_null")]
    pub z: f64,
}

/// Why the optimizer refused a step (moment-optim's
/// [`RefusedStep`](moment_optim::RefusedStep)): nothing changed, no update was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The error's kind (`NonFiniteGradient`, `ShapeMismatch`, `InvalidLearningRate`, …).
    pub kind: String,
    /// The parameter the error names, if it names one.
    #[serde(default)]
    pub path: Option<String>,
    /// The error's message.
    pub reason: String,
}

/// One step: a step that ran, one skipped by the non-finite policy (`skipped`), or one the
/// optimizer refused (`refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer step counter after the step (unchanged by skipped and refused steps, so
    /// they carry the number of the last step that ran).
    pub step: u64,
    /// Seconds since the monitor started, when the step was finished.
    #[serde(deserialize_with = "nan_if_null")]
    pub wall_s: f64,
    /// Wall time of the whole training step (given, or since the previous step finished).
    pub step_time_s: Option<f64>,
    /// Tokens processed by the step.
    pub tokens: Option<u64>,
    /// Tokens per second of wall time.
    pub tokens_per_s: Option<f64>,
    /// Training loss, when given.
    pub loss: Option<f64>,
    /// Validation loss, on the steps the loop evaluated.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Learning rate passed to the step.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Learning rate per parameter group.
    #[serde(deserialize_with = "nan_if_null_map")]
    pub group_lrs: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// Clipping threshold, when clipping is configured.
    pub clip_threshold: Option<f64>,
    /// Whether clipping engaged.
    pub clipped: bool,
    /// Fraction of the steps so far (skipped and refused ones excluded) on which clipping
    /// engaged.
    #[serde(deserialize_with = "nan_if_null")]
    pub clip_rate: f64,
    /// Non-finite gradient elements seen.
    pub non_finite: u64,
    /// Parameters with non-finite gradient elements.
    pub non_finite_paths: Vec<String>,
    /// Non-finite policy applied (`Error`, `SkipStep`, `ZeroGradient`, `Propagate`).
    pub policy: String,
    /// Whether the step was skipped.
    pub skipped: bool,
    /// Why the optimizer refused the step, for a refused one (`None` for steps that ran or
    /// were skipped). A refused record has no gradient norm (`NaN`), learning rate per group
    /// or per-parameter statistics; a refused non-finite gradient fills `non_finite` and
    /// `non_finite_paths`. Absent from files written before refusals were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Memory, when the step was given the optimizer's accounting.
    pub memory: Option<MemoryRecord>,
    /// Per-parameter statistics (observed steps only; empty when per-parameter records are off).
    pub params: Vec<ParamStats>,
    /// Per-layer aggregates (observed steps only).
    pub layers: Vec<LayerStats>,
    /// Spikes detected at this step.
    pub spikes: Vec<Spike>,
}

impl StepRecord {
    /// Whether the optimizer updated the parameters in this step (neither skipped nor refused).
    pub fn ran(&self) -> bool {
        !self.skipped && self.refused.is_none()
    }

    /// Update-to-weight ratio over all observed parameters (`None` on unobserved steps).
    pub fn update_to_weight(&self) -> Option<f64> {
        if self.layers.is_empty() {
            return None;
        }
        let (u, w) = self.layers.iter().fold((0.0, 0.0), |(u, w), l| {
            (
                u + l.update_norm * l.update_norm,
                w + l.weight_norm * l.weight_norm,
            )
        });
        Some(if w > 0.0 { (u / w).sqrt() } else { 0.0 })
    }
}
