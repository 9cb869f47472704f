//! [`plan`]: the fused step of a chain, derived from the chain's own transforms.
//!
//! A fused step implements a *whole* chain, so it is only correct for chains of one exact
//! shape. `plan` recognises those shapes by the transforms' types and reads every
//! hyper-parameter off the transforms themselves (and the core's position off the chain): a
//! chain built by an optimizer config and the same chain built by hand get the same fused
//! step, and nothing is written twice. Shapes (`[x]`: optional):
//!
//! | chain | fused step |
//! | --- | --- |
//! | `[flip_sign] → [L2 λ>0] → scale_by_adam → [decoupled λ>0] → scale_by_learning_rate` | [`FusedAdam`] |
//! | `[flip_sign] → scale_by_lion → [decoupled λ>0] → scale_by_learning_rate` | [`FusedLion`] |
//! | `[flip_sign] → [L2 λ>0] → scale_by_sophia → [decoupled λ>0] → scale_by_learning_rate` | [`FusedSophia`] |
//! | `scale_by_adam_8bit` (CUDA-kernel semantics) `→ flip_sign` | [`FusedAdam8bit`] |
//! | `[flip_sign] → scale_by_adafactor → flip_sign` | [`FusedAdafactor`] |
//!
//! Anything else — another order, a decay of exactly 0 (the composed chain would still add
//! `θ·0`, which is not `+0` for every θ), a transform the kernels do not know — has no fused
//! step and runs composed.

use std::any::Any;
use std::sync::Arc;

use burn::tensor::backend::Backend;

use super::{FusedAdafactor, FusedAdam, FusedAdam8bit, FusedLion, FusedSophia, FusedStep};
use crate::transform::Transform;
use crate::transforms::{
    AddDecayedWeights, FlipSign, ScaleByAdafactor, ScaleByAdam, ScaleByAdam8bit,
    ScaleByLearningRate, ScaleByLion, ScaleBySophia,
};
use crate::{BnbKernel, SophiaVariant};

/// The one-pass step implementing `transforms` (a chain's, in order), if the chain has one of
/// the shapes in the module docs.
pub fn plan<B: Backend>(transforms: &[Arc<dyn Transform<B>>]) -> Option<Arc<dyn FusedStep<B>>> {
    let parts: Vec<&dyn Any> = transforms.iter().map(|t| t.as_ref() as &dyn Any).collect();
    moment_style(&parts).or_else(|| sign_last(&parts))
}

/// `[flip_sign] → [L2] → core → [decoupled] → scale_by_learning_rate`.
fn moment_style<B: Backend>(parts: &[&dyn Any]) -> Option<Arc<dyn FusedStep<B>>> {
    let (last, rest) = parts.split_last()?;
    last.downcast_ref::<ScaleByLearningRate>()?;
    let (maximize, rest) = strip_flip(rest);
    let (coupled, rest) = match rest.split_first() {
        Some((first, tail)) => match decay(*first) {
            Some(l) => (Some(l?), tail),
            None => (None, rest),
        },
        None => return None,
    };
    let (core, decoupled) = match rest {
        [core] => (*core, None),
        [core, d] => (*core, Some(decay(*d)??)),
        _ => return None,
    };
    let index = usize::from(maximize) + usize::from(coupled.is_some());
    if let Some(a) = core.downcast_ref::<ScaleByAdam>() {
        return Some(Arc::new(FusedAdam {
            adam_index: index,
            maximize,
            coupled: coupled.unwrap_or(0.0),
            decoupled: decoupled.unwrap_or(0.0),
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            amsgrad: a.amsgrad,
        }));
    }
    if let Some(l) = core.downcast_ref::<ScaleByLion>() {
        // the Lion kernel has no coupled decay
        return coupled.is_none().then(|| {
            Arc::new(FusedLion {
                lion_index: index,
                maximize,
                decoupled: decoupled.unwrap_or(0.0),
                beta1: l.beta1,
                beta2: l.beta2,
            }) as Arc<dyn FusedStep<B>>
        });
    }
    let s = core.downcast_ref::<ScaleBySophia>()?;
    Some(Arc::new(FusedSophia {
        sophia_index: index,
        maximize,
        coupled: coupled.unwrap_or(0.0),
        decoupled: decoupled.unwrap_or(0.0),
        variant_h: s.variant == SophiaVariant::H,
        beta1: s.beta1,
        rho: s.rho,
        eps: s.eps,
    }))
}

/// `scale_by_adam_8bit → flip_sign` and `[flip_sign] → scale_by_adafactor → flip_sign`.
fn sign_last<B: Backend>(parts: &[&dyn Any]) -> Option<Arc<dyn FusedStep<B>>> {
    let (last, rest) = parts.split_last()?;
    last.downcast_ref::<FlipSign>()?;
    let (maximize, rest) = strip_flip(rest);
    let [core] = rest else {
        return None;
    };
    if let Some(t) = core.downcast_ref::<ScaleByAdam8bit>() {
        // bitsandbytes' optimizers have no `maximize`; the CPU-kernel mode runs composed
        return (!maximize && t.kernel == BnbKernel::Cuda)
            .then(|| Arc::new(FusedAdam8bit { transform: *t }) as Arc<dyn FusedStep<B>>);
    }
    let t = core.downcast_ref::<ScaleByAdafactor>()?;
    Some(Arc::new(FusedAdafactor {
        index: usize::from(maximize),
        maximize,
        transform: *t,
    }))
}

/// A leading `flip_sign` (torch's `maximize`), and the parts after it.
fn strip_flip<'a>(parts: &'a [&'a dyn Any]) -> (bool, &'a [&'a dyn Any]) {
    match parts.split_first() {
        Some((first, tail)) if first.is::<FlipSign>() => (true, tail),
        _ => (false, parts),
    }
}

/// `Some(Some(λ))` for `add_decayed_weights(λ)` with λ > 0, `Some(None)` for one the kernels
/// cannot fuse (λ = 0), `None` for another transform.
fn decay(part: &dyn Any) -> Option<Option<f64>> {
    let d = part.downcast_ref::<AddDecayedWeights>()?;
    Some((d.weight_decay > 0.0).then_some(d.weight_decay))
}
