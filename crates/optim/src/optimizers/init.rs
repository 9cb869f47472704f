//! Burn-shaped entry points: `AdamWConfig::new().init::<B, M>()?`, the same order and names as
//! burn's `burn::optim::AdamWConfig::new().init::<B, M>()`, so switching is one line (and a `?`:
//! moment validates the hyper-parameters and says which one is wrong instead of training with
//! it). The defaults are torch's, not burn's: see `docs/algorithms/adam.md` ("From burn-optim").

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, LambConfig, LionConfig, MarsConfig, MuonConfig, ProdigyConfig, ScheduleFreeConfig,
    ShampooConfig, SoapConfig, SophiaConfig,
};
use crate::error::Result;
use crate::module::ModuleOptimizer;
use crate::optimizer::MomentOptimizer;

macro_rules! burn_shaped {
    ($($config:ident),* $(,)?) => {$(
        impl $config {
            /// The defaults (the reference implementation's; the same as `default()`), as
            /// burn's configs are created.
            pub fn new() -> Self {
                Self::default()
            }

            /// A burn [`Optimizer`](burn::optim::Optimizer) for module `M` on the autodiff
            /// backend `B`: this config's validated chain in a [`MomentOptimizer`] with the
            /// engine's default checks (burn's `init::<B, M>()`, with the same type-parameter
            /// order). Reach the engine (checkpoints, observers, state memory, the last step's
            /// report) through [`ModuleOptimizer::engine`] / [`ModuleOptimizer::engine_mut`].
            pub fn init<B, M>(&self) -> Result<ModuleOptimizer<M, B>>
            where
                B: AutodiffBackend,
                M: AutodiffModule<B>,
            {
                Ok(MomentOptimizer::new(self.build::<B::InnerBackend>()?).for_module::<M, B>())
            }
        }
    )*};
}

burn_shaped!(
    AdafactorConfig,
    AdamConfig,
    AdamWConfig,
    Adam8bitConfig,
    AdamMiniConfig,
    AdemamixConfig,
    CameConfig,
    LambConfig,
    LionConfig,
    MarsConfig,
    MuonConfig,
    ProdigyConfig,
    ScheduleFreeConfig,
    ShampooConfig,
    SoapConfig,
    SophiaConfig,
);
