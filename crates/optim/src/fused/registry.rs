//! Device kernels for backends outside this crate: the [`DeviceSteps`] trait and the
//! per-backend registry the fused steps consult before their CPU kernels.

use burn::tensor::{Tensor, backend::Backend};

use super::{Adam8Scalars, AdamScalars, FusedResult, LionScalars, SophiaScalars};
use crate::transform::TransformState;

/// One-pass kernels for a backend outside this crate (e.g. moment-cuda's CubeCL kernels on
/// burn's CUDA and wgpu backends), registered with [`register_device_steps`]. The fused
/// chains call them before their CPU kernels; each method gets the step's constants (rounded
/// as the composed chain rounds them), the parameter, the gradient and the chain's state for
/// the fused transform, whose layout and lengths were already checked and whose `step` counter
/// was already advanced. A method either performs the whole step (writing every state tensor
/// the composed chain writes, in the same layout) and returns the new parameter, or returns the
/// inputs unchanged and leaves `st` untouched. The defaults decline.
pub trait DeviceSteps<B: Backend>: Send + Sync {
    /// Adam/AdamW ([`AdamScalars`]); `st.tensors` are `exp_avg`, `exp_avg_sq`
    /// [, `max_exp_avg_sq`].
    fn adam(
        &self,
        sc: &AdamScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// Lion ([`LionScalars`]); `st.tensors` is `exp_avg`.
    fn lion(
        &self,
        sc: &LionScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// Sophia ([`SophiaScalars`]); `st.tensors` are the momentum, the curvature estimate
    /// (read only) and `win_rate` (`[1]`, to be written).
    fn sophia(
        &self,
        sc: &SophiaScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }

    /// 8-bit blockwise Adam/AdamW ([`Adam8Scalars`]); `st.tensors` are `absmax1`, `absmax2`
    /// (one per block), `st.codes` are `state1`, `state2` (`u8`, one per element).
    fn adam8bit(
        &self,
        sc: &Adam8Scalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let _ = (sc, st);
        Err((param, grad))
    }
}

type DeviceRegistry =
    std::sync::RwLock<Vec<(std::any::TypeId, Box<dyn std::any::Any + Send + Sync>)>>;

fn registry() -> &'static DeviceRegistry {
    static REGISTRY: std::sync::OnceLock<DeviceRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Make the fused chains use `steps` on backend `B` (replacing an earlier registration for
/// `B`). For the optimizer of an autodiff backend, register its inner backend: the step runs
/// there.
pub fn register_device_steps<B: Backend>(steps: std::sync::Arc<dyn DeviceSteps<B>>) {
    let id = std::any::TypeId::of::<B>();
    let mut reg = registry()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.retain(|(k, _)| *k != id);
    reg.push((id, Box::new(steps)));
}

/// Whether device kernels are registered for `B`.
pub fn has_device_steps<B: Backend>() -> bool {
    device_steps::<B>().is_some()
}

fn device_steps<B: Backend>() -> Option<std::sync::Arc<dyn DeviceSteps<B>>> {
    let id = std::any::TypeId::of::<B>();
    let reg = registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.iter()
        .find(|(k, _)| *k == id)
        .and_then(|(_, v)| v.downcast_ref::<std::sync::Arc<dyn DeviceSteps<B>>>())
        .cloned()
}

/// Run `f` with `B`'s device kernels, or hand the inputs back.
pub(super) fn on_device<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    f: impl FnOnce(&dyn DeviceSteps<B>, Tensor<B, 1>, Tensor<B, 1>) -> FusedResult<B>,
) -> FusedResult<B> {
    match device_steps::<B>() {
        Some(d) => f(&*d, param, grad),
        None => Err((param, grad)),
    }
}
