//! Property tests of the fused CubeCL kernels on burn's wgpu backend (feature `wgpu`; in CI a
//! software Vulkan device, mesa's llvmpipe): for random hyper-parameters drawn from each
//! family's valid range, random shapes and random values, every step of the fused GPU kernel
//! agrees with moment-optim's composed chain on the CPU backend (the reference of
//! `common/suite.rs`) — parameters and every state tensor of the record, step by step, within
//! the f32 rounding budget derived in [`ULPS_PER_STEP`]; 8-bit codes exactly. And the kernel
//! really ran: a counting wrapper around [`CubeSteps`] is the registered device step, and every
//! property asserts one accepted kernel launch per parameter and step, so no property can pass
//! on a silent fallback to the composed path.
//!
//! Sizes: small tensors (up to three parameters of rank ≤ 3), and sizes at the kernels' grid
//! boundaries: `k·B − 1, k·B, k·B + 1` for the element-wise kernels' cube size `B` (read from
//! the device, as the launch picks it: `CubeDim::new`), `k·block + r` for the 8-bit kernel's
//! quantization blocks (64..=4096 elements, one cube of `min(block, 256)` units per block, so
//! `r` also on the units boundary), and random sizes up to 40 000 elements.
//!
//! Case count: `PROPTEST_CASES` (32 when unset) for the cheap properties, a quarter of it for
//! the large-shape ones (at least one).
#![cfg(feature = "wgpu")]
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Once};

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Runtime;
use cubecl::prelude::CubeDim;
use moment_cuda::{CubeAccess, CubeSteps, StepPath, step_path};
use moment_optim::fused::{
    Adam8Scalars, AdamScalars, DeviceSteps, FusedResult, LionScalars, SophiaScalars,
    register_device_steps,
};
use moment_optim::optimizers::adam_chain;
use moment_optim::{
    Adam8bitConfig, BnbKernel, Chain, Decay, GradEntry, LionConfig, MomentOptimizer,
    OptimizerRecord, ParamTensor, SophiaConfig, SophiaVariant, TransformState,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};

/// The backend under test: burn's default wgpu type (operation fusion on).
type G = moment_cuda::Wgpu;
/// The plain `CubeBackend` over wgpu (no fusion): where the negative controls run.
type Plain = burn_cubecl::CubeBackend<WgpuRuntime, f32, i32, u32>;
type Cpu = NdArray<f32>;

// ---------------------------------------------------------------------------------------------
// Tolerance
// ---------------------------------------------------------------------------------------------

/// The unit roundoff of f32 (half an ulp of 1.0): a correctly rounded operation errs by at most
/// `U·|result|`.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Rounding budget per step, in units of [`U`] times the element's scale `S` (the largest `|x|`
/// the reference trajectory of that element of that stream — parameter or state tensor — has
/// reached up to the step compared, the initial value included).
///
/// The kernels execute the composed chain's f32 operations in the same order (their contract,
/// `src/kernels.rs`), so the two paths can only differ where a device may round differently
/// from the CPU:
/// * `+ − ×`, comparisons, `select`, `max`: correctly rounded or exact on every Vulkan and CUDA
///   device — identical results for identical operands;
/// * `/`: Vulkan allows 2.5 ulp (≤ 5 U relative); `√` is inherited from `1/inversesqrt`
///   (2 ulp + 2.5 ulp: ≤ 9 U). llvmpipe's are correctly rounded (0 U: identical);
/// * a compiler may contract `a·b + c` into one fma (SPIR-V without `NoContraction`): one
///   rounding less, ≤ U of the operands' magnitude.
///
/// Adam's step quotient `u = m / (√v̂·c₂ + ε)·c₁ [+ θ·λ]` then carries ≤ 9 + 5 U from `√` and
/// `/`, ≤ 4 U from the four roundings after them whose operands already differ, ≤ 2 U from
/// contractions: ≤ 20 U relative. The update moves θ by `|u·lr| = |θ_{t−1} − θ_t| ≤ 2·S`, so
/// θ errs by ≤ 40 U·S per step, plus ≤ 2 U·S for a different rounding of `θ + u·(−lr)`. 8-bit
/// Adam's `δ = m / (√v + ε·c₂)·step` is the same quotient, and its decay
/// `θ − (θ + δ)·keep` adds ≤ 4 roundings of magnitude ≤ 3·S-ish (the `θ` and `θ + δ` terms):
/// ≤ 46 U·S per step in all. Sophia has only the `/` (≤ 5 U) and a clamp; Lion neither (θ:
/// ≤ 4 U·S per step from `u + θ·λ`, `·(−lr)`, `θ + …`); the moments and the curvature EMA
/// only `+ − ×` (≤ 2 U·S per step from contractions, plus what a differing θ feeds in through
/// coupled decay, itself within θ's budget relative to the moment's scale). An error made in
/// one step is carried into the next ones (decayed by β < 1 in the moments, added once to θ),
/// so the budget grows linearly with the step count `t`: `|gpu − cpu| ≤ 48·t·U·S` for every
/// stream and family (≈ 2.9·10⁻⁶·t of the element's scale: at |θ| ~ 1 and the smallest lr
/// drawn, 10⁻⁴, about a tenth of one step's change after four steps).
///
/// Not covered by a rounding budget, because they are discontinuous in the operands, and so
/// checked exactly (they agree whenever the operands above agree bitwise, as on llvmpipe):
/// Lion's `sign`, Sophia's clip decisions (the win count), and the 8-bit codes (nearest code of
/// `m / absmax`). A mismatch there is reported, never absorbed by a tolerance.
const ULPS_PER_STEP: f64 = 48.0;

/// Sophia's `win_rate` is `count / n`: the count must be equal, the quotient (one f32
/// division on the device: ≤ 3 ulp = 6 U) within 8 U of the reference.
const WIN_RATE_U: f64 = 8.0;

/// Largest `|a − e| / tol` seen (for `MOMENT_PROPS_VERBOSE`).
#[derive(Default, Debug, Clone, Copy)]
struct Seen {
    /// Elements compared.
    compared: usize,
    /// Elements not bitwise equal.
    differing: usize,
    /// Largest error as a fraction of its tolerance.
    worst: f64,
}

impl Seen {
    fn merge(&mut self, o: Seen) {
        self.compared += o.compared;
        self.differing += o.differing;
        self.worst = self.worst.max(o.worst);
    }
}

/// Each element of `actual` within `ULPS_PER_STEP·t·U·scale` of `expected` (bitwise-equal NaNs
/// accepted, none expected).
fn within_budget(
    actual: &[f32],
    expected: &[f32],
    scale: &[f32],
    t: usize,
    what: &str,
) -> Result<Seen, TestCaseError> {
    if actual.len() != expected.len() {
        return Err(TestCaseError::fail(format!(
            "{what}: length {} vs {}",
            actual.len(),
            expected.len()
        )));
    }
    let mut seen = Seen {
        compared: actual.len(),
        ..Seen::default()
    };
    for (i, ((&a, &e), &s)) in actual.iter().zip(expected).zip(scale).enumerate() {
        if a.to_bits() == e.to_bits() {
            continue;
        }
        seen.differing += 1;
        let (a, e, s) = (f64::from(a), f64::from(e), f64::from(s));
        let tol = ULPS_PER_STEP * t as f64 * U * s;
        let err = (a - e).abs();
        if err.is_nan() || err > tol {
            return Err(TestCaseError::fail(format!(
                "{what}: element {i}: gpu {a:e} vs composed {e:e} (|diff| {err:e} > tol {tol:e}, \
                 scale {s:e}, step {t})"
            )));
        }
        seen.worst = seen.worst.max(if tol > 0.0 { err / tol } else { 0.0 });
    }
    Ok(seen)
}

/// `scale[i] ← max(scale[i], |x[i]|)`.
fn raise(scale: &mut Vec<f32>, x: &[f32]) {
    if scale.len() < x.len() {
        scale.resize(x.len(), 0.0);
    }
    for (s, v) in scale.iter_mut().zip(x) {
        *s = s.max(v.abs());
    }
}

// ---------------------------------------------------------------------------------------------
// The device step, counted
// ---------------------------------------------------------------------------------------------

/// Kernel families, indices into the launch counters.
const ADAM: usize = 0;
const LION: usize = 1;
const SOPHIA: usize = 2;
const ADAM8: usize = 3;

thread_local! {
    /// Accepted kernel launches on this thread, per family (the optimizer steps on the calling
    /// thread; the tests run on several threads at once, hence per thread).
    static LAUNCHES: Cell<[usize; 4]> = const { Cell::new([0; 4]) };
}

fn launches() -> [usize; 4] {
    LAUNCHES.with(Cell::get)
}

/// [`CubeSteps`], counting the launches it accepted (`Ok`: the kernel ran and wrote the step).
struct Counting<B: CubeAccess>(CubeSteps<B>);

fn count<B: Backend>(family: usize, r: FusedResult<B>) -> FusedResult<B> {
    if r.is_ok() {
        LAUNCHES.with(|c| {
            let mut v = c.get();
            v[family] += 1;
            c.set(v);
        });
    }
    r
}

impl<B: CubeAccess> DeviceSteps<B> for Counting<B> {
    fn adam(
        &self,
        sc: &AdamScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        count(ADAM, self.0.adam(sc, param, grad, st))
    }

    fn lion(
        &self,
        sc: &LionScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        count(LION, self.0.lion(sc, param, grad, st))
    }

    fn sophia(
        &self,
        sc: &SophiaScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        count(SOPHIA, self.0.sophia(sc, param, grad, st))
    }

    fn adam8bit(
        &self,
        sc: &Adam8Scalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        count(ADAM8, self.0.adam8bit(sc, param, grad, st))
    }
}

/// Register the counting kernels for [`G`] and [`Plain`] (what `moment_cuda::enable` does,
/// wrapped).
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_device_steps::<G>(Arc::new(Counting(CubeSteps::<G>::default())));
        register_device_steps::<Plain>(Arc::new(Counting(CubeSteps::<Plain>::default())));
    });
}

/// Units per cube of the element-wise kernels' launch for `n` elements (`steps.rs::grid`).
fn cube_units(n: usize) -> usize {
    let client = WgpuRuntime::client(&WgpuDevice::default());
    CubeDim::new(&client, n).num_elems() as usize
}

/// The element-wise kernels' cube size for large tensors (the boundary `k·B ± 1` crosses).
fn big_cube() -> usize {
    cube_units(1 << 20)
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `10^x`, `x` uniform in `[lo, hi)`.
    fn log10(&mut self, lo: f64, hi: f64) -> f64 {
        10f64.powf(lo + (hi - lo) * self.unit())
    }

    fn sign(&mut self) -> f32 {
        if self.next() & 1 == 0 { 1.0 } else { -1.0 }
    }

    /// One value of a tensor of typical magnitude `scale`: mostly uniform in `[-scale, scale]`,
    /// with ±0, tiny (1e-15..1e-12: moments that round to the zero code, Lion's sign of a near
    /// zero) and huge (1e2..1e4) elements mixed in.
    fn value(&mut self, scale: f64) -> f32 {
        match self.next() % 32 {
            0 => 0.0,
            1 => -0.0,
            2 | 3 => self.sign() * self.log10(-15.0, -12.0) as f32,
            4 => self.sign() * self.log10(2.0, 4.0) as f32,
            _ => ((2.0 * self.unit() - 1.0) * scale) as f32,
        }
    }

    fn tensor(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| self.value(scale)).collect()
    }
}

/// One parameter's inputs: initial value, a gradient per step and (Sophia) an optional
/// curvature estimate fed before each step.
#[derive(Debug, Clone)]
struct Inputs {
    shape: Vec<usize>,
    init: Vec<f32>,
    grads: Vec<Vec<f32>>,
    curvature: Vec<Option<Vec<f32>>>,
}

/// Inputs for parameters of `shapes`, `steps` steps, from `seed` (generated on the host, so
/// both backends see the same values).
fn inputs(shapes: &[Vec<usize>], steps: usize, curvature: bool, seed: u64) -> Vec<Inputs> {
    let mut rng = Rng(seed);
    shapes
        .iter()
        .map(|shape| {
            let n: usize = shape.iter().product();
            let init_scale = rng.log10(-2.0, 1.0);
            let init = rng.tensor(n, init_scale);
            let mut grads = Vec::with_capacity(steps);
            let mut curv = Vec::with_capacity(steps);
            for _ in 0..steps {
                let c = curvature && rng.next() & 1 == 0;
                curv.push(c.then(|| {
                    let s = rng.log10(-2.0, 1.0);
                    rng.tensor(n, s)
                }));
                let s = rng.log10(-3.0, 2.0);
                grads.push(rng.tensor(n, s));
            }
            Inputs {
                shape: shape.clone(),
                init,
                grads,
                curvature: curv,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------

/// One fused family's hyper-parameters.
#[derive(Debug, Clone, Copy)]
enum Cfg {
    Adam {
        betas: (f64, f64),
        eps: f64,
        decay: Decay,
        amsgrad: bool,
        maximize: bool,
    },
    Lion(LionConfig),
    Sophia(SophiaConfig),
    Adam8(Adam8bitConfig),
}

impl Cfg {
    fn chain<B: Backend>(&self) -> Chain<B> {
        match *self {
            Cfg::Adam {
                betas,
                eps,
                decay,
                amsgrad,
                maximize,
            } => adam_chain("adam", betas, eps, decay, amsgrad, maximize),
            Cfg::Lion(c) => c.build(),
            Cfg::Sophia(c) => c.build(),
            Cfg::Adam8(c) => c.build(),
        }
        .expect("a configuration drawn from the valid range builds")
    }

    fn family(&self) -> usize {
        match self {
            Cfg::Adam { .. } => ADAM,
            Cfg::Lion(_) => LION,
            Cfg::Sophia(_) => SOPHIA,
            Cfg::Adam8(_) => ADAM8,
        }
    }

    fn curvature(&self) -> bool {
        matches!(self, Cfg::Sophia(_))
    }
}

/// β in `[0, 1)`: below, at and above ½ (where torch's lerp switches formula), exact 0, and
/// close to 1.
fn beta() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        1 => Just(0.5),
        4 => 0.0..0.5f64,
        4 => 0.5..0.99f64,
        2 => 0.99..0.9999f64,
    ]
}

/// `10^x`, `x` uniform in `[lo, hi)`.
fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo..hi).prop_map(|x| 10f64.powf(x))
}

fn decay() -> impl Strategy<Value = Decay> {
    prop_oneof![
        Just(Decay::None),
        log_uniform(-4.0, -0.3).prop_map(Decay::Coupled),
        log_uniform(-4.0, -0.3).prop_map(Decay::Decoupled),
    ]
}

fn adam_cfg() -> impl Strategy<Value = Cfg> {
    (
        (beta(), beta()),
        log_uniform(-10.0, -4.0),
        decay(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(betas, eps, decay, amsgrad, maximize)| Cfg::Adam {
            betas,
            eps,
            decay,
            amsgrad,
            maximize,
        })
}

fn lion_cfg() -> impl Strategy<Value = Cfg> {
    (
        (beta(), beta()),
        prop_oneof![Just(0.0), log_uniform(-4.0, -0.3)],
        any::<bool>(),
    )
        .prop_map(|(betas, weight_decay, maximize)| {
            Cfg::Lion(LionConfig {
                betas,
                weight_decay,
                maximize,
            })
        })
}

fn sophia_cfg() -> impl Strategy<Value = Cfg> {
    (
        any::<bool>(),
        (beta(), beta()),
        log_uniform(-3.0, 0.0),
        log_uniform(0.0, 4.0),
        log_uniform(-15.0, -4.0),
        decay(),
        any::<bool>(),
    )
        .prop_map(|(h, betas, rho, bs, eps, decay, maximize)| {
            Cfg::Sophia(SophiaConfig {
                variant: if h {
                    SophiaVariant::H
                } else {
                    SophiaVariant::G
                },
                betas,
                rho,
                bs,
                eps,
                decay,
                maximize,
            })
        })
}

/// 8-bit Adam/AdamW with quantization blocks of `block` elements (every tensor quantized).
fn adam8_cfg(block: impl Strategy<Value = usize>) -> impl Strategy<Value = Cfg> {
    (
        (beta(), beta()),
        log_uniform(-10.0, -4.0),
        prop_oneof![Just(0.0), log_uniform(-4.0, -0.3)],
        block,
    )
        .prop_map(|(betas, eps, weight_decay, block_size)| {
            Cfg::Adam8(Adam8bitConfig {
                betas,
                eps,
                weight_decay,
                min_8bit_size: 0,
                block_size,
                kernel: BnbKernel::Cuda,
            })
        })
}

/// Every valid 8-bit block size: a power of two in 64..=4096.
fn any_block() -> impl Strategy<Value = usize> {
    (6u32..=12).prop_map(|k| 1usize << k)
}

fn lr() -> impl Strategy<Value = f64> {
    log_uniform(-4.0, -0.5)
}

/// Up to three parameters of rank 1..=3, dims 1..=12 (≤ 1728 elements each).
fn small_shapes() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(1usize..=12, 1..=3), 1..=3)
}

/// A large size: `k·B − 1`, `k·B` or `k·B + 1` for the element-wise cube size `B` (k up to the
/// 40 000-element cap; small k more often), or uniform in `1..=40_000`.
#[derive(Debug, Clone, Copy)]
enum Size {
    Boundary { k: usize, delta: i64 },
    Random(usize),
}

fn large_size() -> impl Strategy<Value = Size> {
    prop_oneof![
        2 => ((1usize..=4), -1i64..=1).prop_map(|(k, delta)| Size::Boundary { k, delta }),
        2 => ((1usize..=2000), -1i64..=1).prop_map(|(k, delta)| Size::Boundary { k, delta }),
        1 => (1usize..=40_000).prop_map(Size::Random),
    ]
}

/// The element count of `s` on this device.
fn elements(s: Size) -> usize {
    match s {
        Size::Random(n) => n,
        Size::Boundary { k, delta } => {
            let b = big_cube();
            let k = k.min(40_000 / b).max(1);
            (k * b).saturating_add_signed(delta as isize).max(1)
        }
    }
}

/// The offset `r` of an 8-bit size `k·block + r`: around 0 (the block boundary), around the
/// kernel's units per cube (`min(block, 256)`: where a unit takes its second element) or
/// anywhere in the block.
#[derive(Debug, Clone, Copy)]
enum Rest {
    Block(i64),
    Units(i64),
    Any(usize),
}

fn rest() -> impl Strategy<Value = Rest> {
    prop_oneof![
        (-1i64..=1).prop_map(Rest::Block),
        (-1i64..=1).prop_map(Rest::Units),
        (0usize..4096).prop_map(Rest::Any),
    ]
}

/// `k·block + r` elements, at most 40 000 (k reduced to fit), at least 1.
fn elements8(block: usize, k: usize, r: Rest) -> usize {
    let units = block.min(256) as i64;
    let r = match r {
        Rest::Block(d) => d,
        Rest::Units(d) => units + d,
        Rest::Any(x) => (x % block) as i64,
    };
    let k = k.min(40_000 / block - 1).max(1);
    ((k * block) as i64 + r).max(1) as usize
}

/// `PROPTEST_CASES` (32 when unset) divided by `share`, at least 1.
fn cases(share: u32) -> u32 {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(32);
    (n / share).max(1)
}

/// Runs property `name`: `cases(share)` cases of `strategy`. (Not the `proptest!` macro: it
/// lets `PROPTEST_CASES` replace the configured count, and the large-shape properties run a
/// share of it.) A failing case shrinks for at most 64 (slow) re-runs unless
/// `PROPTEST_MAX_SHRINK_ITERS` says otherwise, and is saved to
/// `tests/props.proptest-regressions`, whose seeds every property replays first.
fn property<S: Strategy>(
    name: &'static str,
    share: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let default = ProptestConfig::default();
    let max_shrink_iters = if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_some() {
        default.max_shrink_iters
    } else {
        64
    };
    let config = ProptestConfig {
        cases: cases(share),
        max_shrink_iters,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        test_name: Some(name),
        ..default
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}\n{runner}");
    }
}

// ---------------------------------------------------------------------------------------------
// Runs and their comparison
// ---------------------------------------------------------------------------------------------

fn flat<B: Backend>(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn values<B: Backend>(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data()
        .to_vec::<f32>()
        .expect("an f32 tensor reads back")
}

/// One run, step by step.
struct Trace {
    /// Parameter values after each step (`[step][param]`; step 0: the initial values).
    params: Vec<Vec<Vec<f32>>>,
    /// The record after each step (`records[t − 1]`: after step `t`).
    records: Vec<OptimizerRecord>,
    /// `params_fused` of each step.
    fused: Vec<usize>,
    /// Accepted kernel launches per family during each step.
    launches: Vec<[usize; 4]>,
}

fn path(i: usize) -> String {
    format!("p{i}")
}

/// Runs `chain` on backend `B` over `inp` with learning rate `lr`.
fn run<B: Backend>(chain: Chain<B>, inp: &[Inputs], lr: f64) -> Trace {
    run_with(chain, inp, lr, true)
}

/// [`run`]; without `read`, only the step reports and launch counts are kept (nothing is read
/// back from the device).
fn run_with<B: Backend>(chain: Chain<B>, inp: &[Inputs], lr: f64, read: bool) -> Trace {
    let mut opt = MomentOptimizer::new(chain);
    let mut ps: Vec<ParamTensor<B>> = inp
        .iter()
        .enumerate()
        .map(|(i, x)| ParamTensor {
            path: path(i),
            shape: x.shape.clone(),
            value: flat(&x.init),
            grad: None,
        })
        .collect();
    let steps = inp.first().map_or(0, |x| x.grads.len());
    let mut trace = Trace {
        params: vec![inp.iter().map(|x| x.init.clone()).collect()],
        records: Vec::new(),
        fused: Vec::new(),
        launches: Vec::new(),
    };
    for t in 0..steps {
        let curv: Vec<GradEntry<B>> = inp
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                x.curvature[t].as_ref().map(|c| GradEntry {
                    path: path(i),
                    param_shape: x.shape.clone(),
                    grad_shape: x.shape.clone(),
                    grad: flat(c),
                    param: None,
                })
            })
            .collect();
        if !curv.is_empty() {
            opt.update_curvature(curv).expect("curvature update");
        }
        for (p, x) in ps.iter_mut().zip(inp) {
            p.grad = Some(flat(&x.grads[t]));
        }
        let before = launches();
        let report = opt.step(lr, &mut ps).expect("step");
        let after = launches();
        trace
            .launches
            .push(std::array::from_fn(|k| after[k] - before[k]));
        trace.fused.push(report.params_fused);
        if read {
            trace
                .params
                .push(ps.iter().map(|p| values(&p.value)).collect());
            trace.records.push(opt.to_record());
        }
    }
    trace
}

/// The GPU run took the fused kernel of `family` for every parameter on every step (and no
/// other kernel).
fn all_fused(gpu: &Trace, family: usize, params: usize) -> Result<(), TestCaseError> {
    for (t, (&f, l)) in gpu.fused.iter().zip(&gpu.launches).enumerate() {
        let mut want = [0; 4];
        want[family] = params;
        prop_assert_eq!(f, params, "step {}: params_fused", t + 1);
        prop_assert_eq!(*l, want, "step {}: kernel launches per family", t + 1);
    }
    Ok(())
}

/// The run never touched a kernel (the composed reference).
fn none_fused(run: &Trace) -> Result<(), TestCaseError> {
    for (t, (&f, l)) in run.fused.iter().zip(&run.launches).enumerate() {
        prop_assert_eq!(
            f,
            0,
            "step {}: composed run reported fused parameters",
            t + 1
        );
        prop_assert_eq!(*l, [0; 4], "step {}: composed run launched kernels", t + 1);
    }
    Ok(())
}

/// `gpu` agrees with the reference `cpu` after every step: parameters and every float state
/// tensor within the budget, Sophia's win count exactly (rate within [`WIN_RATE_U`]), codes
/// and counters exactly, the same record structure.
fn agree(gpu: &Trace, cpu: &Trace, what: &str) -> Result<Seen, TestCaseError> {
    let mut seen = Seen::default();
    prop_assert_eq!(gpu.params.len(), cpu.params.len());
    // Running per-element scales of the reference trajectory.
    let mut pscale: Vec<Vec<f32>> = vec![Vec::new(); cpu.params[0].len()];
    for (i, p) in cpu.params[0].iter().enumerate() {
        raise(&mut pscale[i], p);
    }
    let mut sscale: HashMap<(usize, usize, usize), Vec<f32>> = HashMap::new();
    for t in 1..cpu.params.len() {
        for (i, (a, e)) in gpu.params[t].iter().zip(&cpu.params[t]).enumerate() {
            raise(&mut pscale[i], e);
            seen.merge(within_budget(
                a,
                e,
                &pscale[i],
                t,
                &format!("{what}: step {t}, parameter {i}"),
            )?);
        }
        let (ra, re) = (&gpu.records[t - 1], &cpu.records[t - 1]);
        prop_assert_eq!(ra.steps, re.steps);
        prop_assert_eq!(ra.params.len(), re.params.len());
        for (pi, (pa, pe)) in ra.params.iter().zip(&re.params).enumerate() {
            prop_assert_eq!(&pa.path, &pe.path);
            prop_assert_eq!(&pa.shape, &pe.shape);
            prop_assert_eq!(pa.transforms.len(), pe.transforms.len());
            let n: usize = pe.shape.iter().product();
            for (ti, (ta, te)) in pa.transforms.iter().zip(&pe.transforms).enumerate() {
                let at = format!("{what}: step {t}, {} transform {ti} ({})", pe.path, te.name);
                prop_assert_eq!(&ta.name, &te.name, "{}", at);
                prop_assert_eq!(&ta.counters, &te.counters, "{}: counters", at);
                prop_assert_eq!(&ta.scalars, &te.scalars, "{}: scalars", at);
                prop_assert_eq!(ta.tensors.len(), te.tensors.len(), "{}: tensors", at);
                for (k, (xa, xe)) in ta.tensors.iter().zip(&te.tensors).enumerate() {
                    let at = format!("{at}: {}", xe.name);
                    prop_assert_eq!(&xa.name, &xe.name, "{}", at);
                    prop_assert_eq!(&xa.shape, &xe.shape, "{}: shape", at);
                    if xe.name == "win_rate" {
                        let (a, e) = (f64::from(xa.values[0]), f64::from(xe.values[0]));
                        prop_assert_eq!(
                            (a * n as f64).round(),
                            (e * n as f64).round(),
                            "{}: unclipped count (rates {} vs {})",
                            at,
                            a,
                            e
                        );
                        prop_assert!(
                            (a - e).abs() <= WIN_RATE_U * U * e.abs(),
                            "{}: {} vs {}",
                            at,
                            a,
                            e
                        );
                        continue;
                    }
                    let s = sscale.entry((pi, ti, k)).or_default();
                    raise(s, &xe.values);
                    seen.merge(within_budget(&xa.values, &xe.values, s, t, &at)?);
                }
                prop_assert_eq!(ta.codes.len(), te.codes.len(), "{}: codes", at);
                for (ca, ce) in ta.codes.iter().zip(&te.codes) {
                    prop_assert_eq!(&ca.name, &ce.name, "{}", at);
                    prop_assert_eq!(&ca.shape, &ce.shape, "{}: {} shape", at, ce.name);
                    if let Some(i) = ca.values.iter().zip(&ce.values).position(|(a, e)| a != e) {
                        let block = match gpu_cfg_block(te) {
                            Some(b) => format!(" (block {})", i / b),
                            None => String::new(),
                        };
                        return Err(TestCaseError::fail(format!(
                            "{at}: {} code of element {i}{block}: gpu {} vs composed {} \
                             ({} of {} codes differ)",
                            ce.name,
                            ca.values[i],
                            ce.values[i],
                            ca.values
                                .iter()
                                .zip(&ce.values)
                                .filter(|(a, e)| a != e)
                                .count(),
                            ce.values.len()
                        )));
                    }
                    prop_assert_eq!(ca.values.len(), ce.values.len());
                }
            }
        }
    }
    if std::env::var_os("MOMENT_PROPS_VERBOSE").is_some() {
        eprintln!(
            "{what}: {} elements compared, {} not bitwise equal, worst error {:.3} of tolerance",
            seen.compared, seen.differing, seen.worst
        );
    }
    Ok(seen)
}

/// The quantization block of an 8-bit transform record (elements per `absmax` entry).
fn gpu_cfg_block(t: &moment_optim::record::TransformRecord) -> Option<usize> {
    let n = t.codes.first()?.values.len();
    let nb = t.tensors.first()?.values.len();
    (nb > 0).then(|| n.div_ceil(nb))
}

/// Fused on the GPU against composed on the CPU: every step fused (one accepted launch per
/// parameter), every step in agreement.
fn check(cfg: Cfg, inp: &[Inputs], lr: f64) -> Result<Seen, TestCaseError> {
    setup();
    let what = format!("{cfg:?}, lr {lr:e}, sizes {:?}", sizes(inp));
    let gpu = run(cfg.chain::<G>(), inp, lr);
    all_fused(&gpu, cfg.family(), inp.len())?;
    let cpu = run(cfg.chain::<Cpu>().composed(), inp, lr);
    none_fused(&cpu)?;
    agree(&gpu, &cpu, &what)
}

fn sizes(inp: &[Inputs]) -> Vec<usize> {
    inp.iter().map(|x| x.init.len()).collect()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Adam/AdamW/AMSGrad (every flag combination: maximize, coupled or decoupled decay,
/// AMSGrad) on up to three small parameters of rank ≤ 3, 1–6 steps: the fused kernel agrees
/// with the composed chain after every step. Input: (config, shapes, steps, lr, seed).
#[test]
fn adam_fused_matches_composed_on_small_tensors() {
    property(
        "adam_fused_matches_composed_on_small_tensors",
        1,
        (adam_cfg(), small_shapes(), 1usize..=6, lr(), any::<u64>()),
        |(cfg, shapes, steps, lr, seed)| {
            check(cfg, &inputs(&shapes, steps, false, seed), lr).map(drop)
        },
    );
}

/// Every family's kernel is what runs (no silent fallback): `step_path` says fused, each step
/// reports every parameter fused and the counting wrapper saw exactly one accepted launch per
/// parameter of that family's kernel (none of another), on up to three small parameters, and
/// the result agrees with the composed chain; the same chain forced composed on the GPU
/// launches nothing and reports nothing fused, and so does 8-bit Adam below `min_8bit_size`
/// (32-bit state: the kernel declines) — the counter moves only with a launch.
/// Input: (config, shapes, steps, lr, seed).
#[test]
fn fused_kernel_runs_on_every_step_and_only_there() {
    property(
        "fused_kernel_runs_on_every_step_and_only_there",
        1,
        (
            prop_oneof![adam_cfg(), lion_cfg(), sophia_cfg(), adam8_cfg(any_block())],
            small_shapes(),
            1usize..=3,
            lr(),
            any::<u64>(),
        ),
        |(cfg, shapes, steps, lr, seed)| {
            setup();
            prop_assert_eq!(step_path::<G>(), StepPath::Fused);
            prop_assert_eq!(step_path::<Cpu>(), StepPath::Composed);
            let inp = inputs(&shapes, steps, cfg.curvature(), seed);
            check(cfg, &inp, lr)?;
            // The negative controls run on the plain `CubeBackend` (counted too): burn's fusion
            // backend miscomputes composed chains with 1-element parameters, which can corrupt
            // later GPU results in the process (upstream; not what this property is about).
            none_fused(&run_with(cfg.chain::<Plain>().composed(), &inp, lr, false))?;
            if let Cfg::Adam8(c) = cfg {
                let big = inp.iter().map(|x| x.init.len()).max().unwrap_or(0);
                let c = Adam8bitConfig {
                    min_8bit_size: big + 1,
                    ..c
                };
                none_fused(&run_with(Cfg::Adam8(c).chain::<Plain>(), &inp, lr, false))?;
            }
            Ok(())
        },
    );
}

/// Adam family on one large tensor at the element-wise kernel's cube boundaries
/// (`k·B − 1, k·B, k·B + 1`) or of a random size up to 40 000, 1–4 steps.
/// Input: (config, size, steps, lr, seed).
#[test]
fn adam_fused_matches_composed_across_cube_boundaries() {
    property(
        "adam_fused_matches_composed_across_cube_boundaries",
        4,
        (adam_cfg(), large_size(), 1usize..=4, lr(), any::<u64>()),
        |(cfg, size, steps, lr, seed)| {
            let n = elements(size);
            check(cfg, &inputs(&[vec![n]], steps, false, seed), lr).map(drop)
        },
    );
}

/// Lion (maximize, decoupled decay) on a small and a large tensor (cube boundaries or random
/// size) stepped together: parameters and momentum within the budget — the sign of the
/// interpolated momentum agrees exactly, or a parameter is off by 2·lr.
/// Input: (config, small size, large size, steps, lr, seed).
#[test]
fn lion_fused_matches_composed_across_cube_boundaries() {
    property(
        "lion_fused_matches_composed_across_cube_boundaries",
        4,
        (
            lion_cfg(),
            1usize..=300,
            large_size(),
            1usize..=4,
            lr(),
            any::<u64>(),
        ),
        |(cfg, small, size, steps, lr, seed)| {
            let n = elements(size);
            check(
                cfg,
                &inputs(&[vec![small], vec![n]], steps, false, seed),
                lr,
            )
            .map(drop)
        },
    );
}

/// Sophia-G/H (maximize, coupled or decoupled decay, curvature estimates fed before random
/// steps) on a large tensor at the cube boundaries (or of random size) stepped together with
/// up to two small ones: parameters, momentum and curvature within the budget, and each
/// parameter's win count — summed per cube on the GPU — exactly the composed path's.
/// Input: (config, large size, small sizes, steps, lr, seed).
#[test]
fn sophia_fused_matches_composed_win_count_exact_across_cubes() {
    property(
        "sophia_fused_matches_composed_win_count_exact_across_cubes",
        4,
        (
            sophia_cfg(),
            large_size(),
            prop::collection::vec(1usize..=300, 0..=2),
            1usize..=4,
            lr(),
            any::<u64>(),
        ),
        |(cfg, size, small, steps, lr, seed)| {
            let mut shapes = vec![vec![elements(size)]];
            shapes.extend(small.into_iter().map(|n| vec![n]));
            check(cfg, &inputs(&shapes, steps, true, seed), lr).map(drop)
        },
    );
}

/// 8-bit blockwise Adam/AdamW, every block size (64..=4096), at `k·block + r` with `r` at the
/// block boundary (±1), at the kernel's units per cube (`min(block, 256)` ± 1: the first unit
/// taking a second element) or anywhere: the same codes (both moments, every element),
/// `absmax` per block and parameters within the budget, after every step.
/// Input: (config, k, r, steps, lr, seed).
#[test]
fn adam8bit_codes_and_absmax_match_across_quantization_blocks() {
    property(
        "adam8bit_codes_and_absmax_match_across_quantization_blocks",
        4,
        (
            adam8_cfg(any_block()),
            prop_oneof![1usize..=3, 1usize..=600],
            rest(),
            1usize..=4,
            lr(),
            any::<u64>(),
        ),
        |(cfg, k, r, steps, lr, seed)| {
            let Cfg::Adam8(c) = cfg else {
                return Err(TestCaseError::fail("not an 8-bit configuration"));
            };
            let n = elements8(c.block_size, k, r);
            check(cfg, &inputs(&[vec![n]], steps, false, seed), lr).map(drop)
        },
    );
}

/// The sizes the boundary properties draw really cross the element-wise cube size and
/// the 8-bit blocks (a guard against a strategy that silently stops reaching them).
#[test]
fn boundary_sizes_cross_the_launch_geometry() {
    let b = big_cube();
    assert!(b.is_power_of_two() && b >= 2, "cube of {b} units");
    for k in [1, 2, 3] {
        for d in [-1, 0, 1] {
            let n = elements(Size::Boundary { k, delta: d });
            assert_eq!(n as i64, (k * b) as i64 + d);
            assert!(
                n.div_ceil(cube_units(n)) >= k,
                "n = {n}: {} units",
                cube_units(n)
            );
        }
    }
    for block in [64, 256, 2048, 4096] {
        assert_eq!(elements8(block, 2, Rest::Block(1)), 2 * block + 1);
        assert_eq!(elements8(block, 1, Rest::Block(-1)), block - 1);
        assert_eq!(
            elements8(block, 1, Rest::Units(1)),
            block + block.min(256) + 1
        );
    }
}
