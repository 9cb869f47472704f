//! burn integration: [`ModuleOptimizer`] implements burn's `Optimizer<M, B>` over a
//! [`MomentOptimizer`], walking the module with parameter paths.

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};

use crate::error::{OptimError, Result};
use crate::optimizer::{GradEntry, MomentOptimizer, ParamTensor, PreparedStep, StepReport};
use crate::record::OptimizerRecord;

/// A [`MomentOptimizer`] bound to a module type, usable wherever burn expects an optimizer
/// (e.g. `burn-train`'s Learner).
///
/// burn's `Optimizer::step` cannot return an error. Through it, a step that fails (e.g. a
/// non-finite gradient under [`NonFinitePolicy::Error`](crate::NonFinitePolicy::Error)) leaves
/// the module and state unchanged and keeps the error for [`ModuleOptimizer::take_error`];
/// call [`ModuleOptimizer::try_step`] to get it as a `Result` instead. Either way the engine's
/// observer is told ([`Observer::on_refused`](crate::Observer::on_refused)): under burn-train's
/// Learner, which owns the optimizer and never calls `take_error`, an attached monitor is
/// where refused steps show.
pub struct ModuleOptimizer<M, B: AutodiffBackend> {
    engine: MomentOptimizer<B::InnerBackend>,
    last_error: Option<OptimError>,
    in_eval: bool,
    _module: PhantomData<fn() -> M>,
}

impl<M, B: AutodiffBackend> Clone for ModuleOptimizer<M, B> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            last_error: self.last_error.clone(),
            in_eval: self.in_eval,
            _module: PhantomData,
        }
    }
}

impl<M, B: AutodiffBackend> std::fmt::Debug for ModuleOptimizer<M, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleOptimizer")
            .field("engine", &self.engine)
            .field("last_error", &self.last_error)
            .finish()
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> ModuleOptimizer<M, B> {
    /// Wrap an engine.
    pub fn new(engine: MomentOptimizer<B::InnerBackend>) -> Self {
        Self {
            engine,
            last_error: None,
            in_eval: false,
            _module: PhantomData,
        }
    }

    /// The engine (reports, accounting, records, observer).
    pub fn engine(&self) -> &MomentOptimizer<B::InnerBackend> {
        &self.engine
    }

    /// Mutable access to the engine.
    pub fn engine_mut(&mut self) -> &mut MomentOptimizer<B::InnerBackend> {
        &mut self.engine
    }

    /// The error of the last failed `Optimizer::step`, if any (cleared by this call).
    pub fn take_error(&mut self) -> Option<OptimError> {
        self.last_error.take()
    }

    /// A step that reports errors. The module comes back in both cases; on error it and the
    /// optimizer state are unchanged.
    pub fn try_step(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
    ) -> (M, Result<StepReport>) {
        self.step_common(lr, module, GradAdaptor::from(grads))
    }

    /// Feed curvature estimates computed as gradients of `module` (e.g. the backward pass of
    /// [`GnbEstimator::sampled_loss`](crate::curvature::GnbEstimator::sampled_loss)) to the
    /// transforms that use them (Sophia); see [`MomentOptimizer::update_curvature`].
    pub fn update_curvature(&mut self, module: &M, grads: GradientsParams) -> Result<usize> {
        let (entries, _) = collect::<M, B>(module, &mut GradAdaptor::from(grads));
        self.engine.update_curvature(entries)
    }

    /// The module with every parameter replaced by its evaluation view (Schedule-Free: the
    /// averaged `x`); call [`ModuleOptimizer::train`] before the next step — a step in between
    /// is refused with [`OptimError::EvalMode`]. Parameters of chains without a separate
    /// evaluation point are unchanged. Calling `eval` twice is a no-op the second time.
    pub fn eval(&mut self, module: M) -> M {
        if self.in_eval {
            return module;
        }
        self.in_eval = true;
        module.map(&mut Viewer::<B> {
            path: Vec::new(),
            engine: &self.engine,
            eval: true,
        })
    }

    /// Inverse of [`ModuleOptimizer::eval`]: back to the training parameters (a no-op when
    /// not in evaluation mode).
    pub fn train(&mut self, module: M) -> M {
        if !self.in_eval {
            return module;
        }
        self.in_eval = false;
        module.map(&mut Viewer::<B> {
            path: Vec::new(),
            engine: &self.engine,
            eval: false,
        })
    }

    fn step_common(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradAdaptor,
    ) -> (M, Result<StepReport>) {
        if self.in_eval {
            let e = OptimError::EvalMode;
            self.engine.notify_refused(lr, &e);
            return (module, Err(e));
        }
        let (entries, devices) = collect::<M, B>(&module, &mut grads);
        let mut prep = match self.engine.prepare(lr, entries) {
            Ok(p) => p,
            Err(e) => return (module, Err(e)),
        };
        let mut applier = Applier::<B> {
            path: Vec::new(),
            engine: &mut self.engine,
            prep: &mut prep,
            devices,
        };
        let module = module.map(&mut applier);
        let report = self.engine.finish(prep);
        (module, Ok(report))
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for ModuleOptimizer<M, B> {
    type Record = OptimizerRecord;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let (module, res) = self.step_common(lr, module, GradAdaptor::from(grads));
        if let Err(e) = res {
            self.last_error = Some(e);
        }
        module
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        let (module, res) = self.step_common(lr, module, GradAdaptor::from(grads));
        if let Err(e) = res {
            self.last_error = Some(e);
        }
        module
    }

    fn to_record(&self) -> Self::Record {
        self.engine.to_record()
    }

    /// Loads lazily (state tensors are created on each parameter's device at its next step).
    /// A record that does not fit is kept as [`ModuleOptimizer::take_error`] and ignored.
    fn load_record(mut self, record: Self::Record) -> Self {
        if let Err(e) = self.engine.load_record_lazy(record) {
            self.last_error = Some(e);
        }
        self
    }
}

fn join(path: &[String]) -> String {
    path.join(".")
}

/// The `enter_module` / `exit_module` pair of a visitor or mapper with a `path: Vec<String>`
/// field: the path of the parameter being visited, as [`join`] names it.
macro_rules! track_path {
    () => {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
    };
}

/// The module's float parameters that have a gradient in `grads` (taken out of it) as flat
/// gradient entries, and each one's device, by path.
#[allow(clippy::type_complexity)]
fn collect<M: AutodiffModule<B>, B: AutodiffBackend>(
    module: &M,
    grads: &mut GradAdaptor,
) -> (
    Vec<GradEntry<B::InnerBackend>>,
    HashMap<String, Device<B::InnerBackend>>,
) {
    let mut collector = Collector::<B> {
        path: Vec::new(),
        grads,
        entries: Vec::new(),
        devices: HashMap::new(),
    };
    module.visit(&mut collector);
    (collector.entries, collector.devices)
}

struct Collector<'a, B: AutodiffBackend> {
    path: Vec<String>,
    grads: &'a mut GradAdaptor,
    entries: Vec<GradEntry<B::InnerBackend>>,
    devices: HashMap<String, Device<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
    track_path!();

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let path = join(&self.path);
        let param_shape = param.val().dims().to_vec();
        let grad_shape = grad.dims().to_vec();
        let n = grad_shape.iter().product::<usize>();
        // On the gradient's device, where the step runs (multi-device steps move parameters).
        let value = param.val().inner().to_device(&device);
        let m = value.dims().iter().product::<usize>();
        self.entries.push(GradEntry {
            path: path.clone(),
            param_shape,
            grad_shape,
            grad: grad.reshape([n]),
            param: Some(value.reshape([m])),
        });
        self.devices.insert(path, device);
    }
}

struct Applier<'a, B: AutodiffBackend> {
    path: Vec<String>,
    engine: &'a mut MomentOptimizer<B::InnerBackend>,
    prep: &'a mut PreparedStep<B::InnerBackend>,
    devices: HashMap<String, Device<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Applier<'_, B> {
    track_path!();

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = join(&self.path);
        let Some(device) = self.devices.remove(&path) else {
            return param;
        };
        remap_flat(param, |flat| {
            let flat = if flat.device() != device {
                flat.to_device(&device)
            } else {
                flat
            };
            self.engine.apply(self.prep, &path, flat)
        })
    }
}

/// `param` with its value replaced by `f(value)`, `f` seeing and returning the inner value
/// flattened (the same number of elements); the id, the mapper and the require-grad flag are
/// kept. The one way the mappers below put a new value into a module.
fn remap_flat<B: AutodiffBackend, const D: usize>(
    param: Param<Tensor<B, D>>,
    f: impl FnOnce(Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>,
) -> Param<Tensor<B, D>> {
    let (id, tensor, mapper) = param.consume();
    let require_grad = tensor.is_require_grad();
    let inner = tensor.inner();
    let dims = inner.dims();
    let n = dims.iter().product::<usize>();
    let mut out = Tensor::<B, D>::from_inner(f(inner.reshape([n])).reshape(dims));
    if require_grad {
        out = out.require_grad();
    }
    Param::from_mapped_value(id, out, mapper)
}

struct Viewer<'a, B: AutodiffBackend> {
    path: Vec<String>,
    engine: &'a MomentOptimizer<B::InnerBackend>,
    eval: bool,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Viewer<'_, B> {
    track_path!();

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = join(&self.path);
        remap_flat(param, |flat| {
            if self.eval {
                self.engine.eval_view(&path, flat)
            } else {
                self.engine.train_view(&path, flat)
            }
        })
    }
}

/// The module's float parameters that have a gradient in `grads`, as flat named tensors on
/// the inner backend (paths as [`ModuleOptimizer`] names them; values on the gradient's
/// device). With [`set_module_params`] this is how a module goes through the flat API (e.g.
/// moment-dist's data-parallel step).
pub fn module_params<M, B>(module: &M, grads: GradientsParams) -> Vec<ParamTensor<B::InnerBackend>>
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    collect::<M, B>(module, &mut GradAdaptor::from(grads))
        .0
        .into_iter()
        .filter_map(|e| {
            let value = e.param?;
            Some(ParamTensor {
                path: e.path,
                shape: e.param_shape,
                value,
                grad: Some(e.grad),
            })
        })
        .collect()
}

/// Every float parameter of the module as a flat named tensor on the inner backend, without
/// gradients (paths as [`ModuleOptimizer`] names them).
pub fn module_values<M, B>(module: &M) -> Vec<ParamTensor<B::InnerBackend>>
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    let mut v = ValueCollector::<B> {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct ValueCollector<B: AutodiffBackend> {
    path: Vec<String>,
    out: Vec<ParamTensor<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ValueCollector<B> {
    track_path!();

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val().inner();
        let shape = value.dims().to_vec();
        let n = shape.iter().product::<usize>();
        self.out.push(ParamTensor {
            path: join(&self.path),
            shape,
            value: value.reshape([n]),
            grad: None,
        });
    }
}

/// `module` with the values of `params` (matched by path, reshaped to each parameter's shape;
/// parameters not in `params` are kept). A value whose element count differs from the
/// parameter's is an error, and the module comes back unchanged.
pub fn set_module_params<M, B>(
    module: M,
    params: Vec<ParamTensor<B::InnerBackend>>,
) -> (M, Result<()>)
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    let mut values: HashMap<String, Tensor<B::InnerBackend, 1>> =
        params.into_iter().map(|p| (p.path, p.value)).collect();
    // check first, so that nothing is replaced on error
    let mut checker = SizeChecker::<B> {
        path: Vec::new(),
        values: &values,
        bad: None,
        _b: PhantomData,
    };
    module.visit(&mut checker);
    if let Some((path, expected, actual)) = checker.bad {
        let err = OptimError::ShapeMismatch {
            path,
            expected,
            actual: vec![actual],
        };
        return (module, Err(err));
    }
    let mut setter = Setter::<B> {
        path: Vec::new(),
        values: &mut values,
    };
    (module.map(&mut setter), Ok(()))
}

struct SizeChecker<'a, B: AutodiffBackend> {
    path: Vec<String>,
    values: &'a HashMap<String, Tensor<B::InnerBackend, 1>>,
    bad: Option<(String, Vec<usize>, usize)>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SizeChecker<'_, B> {
    track_path!();

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = join(&self.path);
        if let Some(v) = self.values.get(&path) {
            let dims = param.val().dims().to_vec();
            if v.dims()[0] != dims.iter().product::<usize>() && self.bad.is_none() {
                self.bad = Some((path, dims, v.dims()[0]));
            }
        }
    }
}

struct Setter<'a, B: AutodiffBackend> {
    path: Vec<String>,
    values: &'a mut HashMap<String, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Setter<'_, B> {
    track_path!();

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = join(&self.path);
        let Some(value) = self.values.remove(&path) else {
            return param;
        };
        // (its length was checked against the parameter's by `SizeChecker`)
        remap_flat(param, |_| value)
    }
}

/// Convenience: `moment.for_module::<M, B>()` without naming the wrapper.
impl<IB: Backend> MomentOptimizer<IB> {
    /// Bind this engine to a module type on the autodiff backend `B` (with `B::InnerBackend = IB`).
    pub fn for_module<M, B>(self) -> ModuleOptimizer<M, B>
    where
        M: AutodiffModule<B>,
        B: AutodiffBackend<InnerBackend = IB>,
    {
        ModuleOptimizer::new(self)
    }
}
