use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::linalg::{RootConfig, inverse_root};
use crate::state_view::Fresh;
use crate::transform::{StateTensor, StepCtx, Transform, TransformState};

/// How Shampoo's per-dimension statistics accumulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistics {
    /// `S ← S + G Gᵀ` (Gupta et al.; pytorch_optimizer `Shampoo`).
    Sum,
    /// `S ← β2·S + (1−β2)·G Gᵀ` (ScalableShampoo, Meta's β2 < 1).
    Ema(f64),
}

/// Inverse roots before the first computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialRoot {
    /// Zero: no update until the first root (pytorch_optimizer `Shampoo`, a named quirk with
    /// `preconditioning_compute_steps > 1`).
    Zero,
    /// Identity: the plain (grafted) gradient until the first root.
    Identity,
}

/// Layer-wise grafting: Shampoo's direction, rescaled per tensor to the norm of a simpler
/// optimizer's step (Agarwal et al. 2020).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Graft {
    /// No grafting.
    None,
    /// SGD: the gradient.
    Sgd,
    /// AdaGrad: `a ← a + g²`, `g / (√a + ε)`.
    AdaGrad,
    /// RMSProp: `a ← β·a + (1−β)·g²`, `g / (√a + ε)`.
    RmsProp(f64),
    /// `sign(g)`.
    SqrtN,
    /// Adam's second moment (Meta's `AdamPreconditionerConfig`): RMSProp with bias
    /// correction, `g / (√(a/(1−β^t)) + ε)`.
    Adam(f64),
}

/// Momentum forms of the two references.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShampooMomentum {
    /// pytorch_optimizer `Shampoo`: `g ← lerp(g, previous preconditioned update, μ)` before
    /// statistics and preconditioning (μ = 0: none); the update is stored as `momentum_buffer`.
    /// Coupled decay is added after the lerp, so the statistics include it. The buffer starts
    /// as the gradient itself (step 1 is a no-op lerp), but see
    /// [`ScaleByShampoo::raw_initial_buffer`] for `maximize`.
    LerpPrevious(f64),
    /// ScalableShampoo: heavy ball `m ← β1·m + d` (or an EMA with `moving_average`) on both the
    /// Shampoo and the graft direction, Nesterov optional; the graft's is used before
    /// `start_preconditioning_step`. Coupled decay is added after the graft rescale.
    Heavy {
        /// β1.
        beta1: f64,
        /// Nesterov look-ahead.
        nesterov: bool,
        /// `m ← lerp(m, d, 1−β1)` instead of `β1·m + d`.
        moving_average: bool,
    },
}

/// Shampoo (Gupta, Koren & Singer 2018) with the options of Google's scalable variant (Anil et
/// al. 2020): per-dimension statistics of each block of the (merged) tensor, inverse p-th
/// roots refreshed every `precondition_frequency` steps by the coupled Newton iteration in
/// tensor ops ([`inverse_root`]), grafting, momentum. A root that fails (non-finite,
/// indefinite, no convergence) keeps the previous root and increments the `root_failures`
/// counter — never NaN.
///
/// Shape handling: with `merge_small_dims` adjacent dims are merged while their product stays
/// ≤ `block_size` (pytorch_optimizer's `merge_small_dims`, which can prepend a 1: `[7]` →
/// `[1, 7]` at 4); each dim is split into blocks of `block_size` (last one smaller); blocks
/// are enumerated with the last dim fastest and statistic `k = block·rank + axis`. The root
/// exponent is `2·rank` of the merged shape (size-1 dims count). A tensor whose merged shape
/// has one dim is preconditioned only with `precondition_1d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByShampoo {
    /// Accumulation of the statistics.
    pub statistics: Statistics,
    /// Statistics start at `matrix_eps·I`.
    pub matrix_eps: f64,
    /// Root exponent instead of `2·rank`.
    pub exponent_override: Option<u32>,
    /// Recompute roots when `t % precondition_frequency == 0`.
    pub precondition_frequency: u64,
    /// Update statistics when `t % statistics_frequency == 0`.
    pub statistics_frequency: u64,
    /// Heavy momentum: use the Shampoo direction from this step on (the graft's before).
    pub start_preconditioning_step: u64,
    /// Block size (pytorch_optimizer `block_size`, Meta `max_preconditioner_dim`).
    pub block_size: Option<usize>,
    /// Merge small adjacent dims (pytorch_optimizer `shape_interpretation`).
    pub merge_small_dims: bool,
    /// Precondition tensors with one (merged) dim by a full matrix.
    pub precondition_1d: bool,
    /// No preconditioning for tensors with a dim larger than this.
    pub max_preconditioned_dim: Option<usize>,
    /// Roots before the first computation.
    pub initial_root: InitialRoot,
    /// Grafting.
    pub graft: Graft,
    /// ε of the AdaGrad/RMSProp graft.
    pub graft_eps: f64,
    /// Momentum form.
    pub momentum: ShampooMomentum,
    /// Coupled (L2) decay λ, where the momentum form puts it.
    pub l2: f64,
    /// pytorch_optimizer `Shampoo(maximize=True, momentum=μ>0)` quirk: its `init_group` creates
    /// `momentum_buffer = grad.clone()` *before* `maximize_gradient` negates `p.grad`, so step 1
    /// uses `lerp(−g, g, μ) = (2μ−1)·g` (a descent step for μ > ½) instead of `−g`. With this
    /// set and [`ShampooMomentum::LerpPrevious`], step 1 lerps the incoming gradient toward its
    /// negation. Meaningful only right after a sign flip: [`crate::ShampooConfig::build`] keeps
    /// it only with `maximize` (`gupta()` sets it, `scalable()` does not).
    pub raw_initial_buffer: bool,
    /// Root iteration options.
    pub root: RootConfig,
}

/// A `&'static str` for a generated state name (interned once per distinct name).
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut map = NAMES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(&name) {
        return s;
    }
    let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
    map.insert(name, leaked);
    leaked
}

/// pytorch_optimizer's `merge_small_dims(shape, max_dim)`.
pub fn merge_small_dims(shape: &[usize], max_dim: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prod = 1usize;
    for &d in shape {
        prod = prod.saturating_mul(d);
        if prod > max_dim {
            out.push(prod / d.max(1));
            prod = d;
        }
    }
    out.push(prod);
    if out.len() > 1 { out } else { vec![1] }
}

/// The layout of one parameter: merged shape, per-axis block sizes, blocks in order.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    tshape: Vec<usize>,
    splits: Vec<Vec<usize>>,
    /// Shapes of the blocks, in enumeration order.
    blocks: Vec<Vec<usize>>,
    preconditioned: bool,
    exponent: u32,
}

impl ScaleByShampoo {
    fn gupta_names(&self) -> bool {
        matches!(self.momentum, ShampooMomentum::LerpPrevious(_))
    }

    pub(super) fn layout(&self, shape: &[usize]) -> Layout {
        let n: usize = shape.iter().product();
        let tshape = if self.merge_small_dims {
            merge_small_dims(shape, self.block_size.unwrap_or(usize::MAX))
        } else if shape.is_empty() {
            vec![1]
        } else {
            shape.to_vec()
        };
        let too_big = self
            .max_preconditioned_dim
            .is_some_and(|m| shape.iter().any(|&d| d > m));
        // A rank-0 parameter has no dims to precondition (the reference loops over none).
        let preconditioned = n > 0
            && !shape.is_empty()
            && !too_big
            && (tshape.len() > 1 || (self.precondition_1d && tshape.len() == 1));
        let splits: Vec<Vec<usize>> = tshape
            .iter()
            .map(|&d| match self.block_size {
                Some(b) if b > 0 && b < d => {
                    let k = (d - 1) / b;
                    let mut v = vec![b; k];
                    v.push(d - k * b);
                    v
                }
                _ => vec![d],
            })
            .collect();
        let mut blocks: Vec<Vec<usize>> = vec![Vec::new()];
        for sizes in &splits {
            blocks = blocks
                .into_iter()
                .flat_map(|b| {
                    sizes.iter().map(move |&s| {
                        let mut b = b.clone();
                        b.push(s);
                        b
                    })
                })
                .collect();
        }
        let rank = tshape.len() as u32;
        Layout {
            exponent: self.exponent_override.unwrap_or(2 * rank),
            tshape,
            splits,
            blocks,
            preconditioned,
        }
    }

    fn stat_name(&self, k: usize) -> &'static str {
        if self.gupta_names() {
            intern(format!("pre_cond_{k}"))
        } else {
            intern(format!("pre_conditioner.statistics.{k}"))
        }
    }

    fn root_name(&self, k: usize) -> &'static str {
        if self.gupta_names() {
            intern(format!("inv_pre_cond_{k}"))
        } else {
            intern(format!("pre_conditioner.pre_conditioners.{k}"))
        }
    }
}

/// `[pre, n, post]` view of axis `axis` of a tensor of `shape`.
fn dims3(shape: &[usize], axis: usize) -> [usize; 3] {
    [
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    ]
}

/// Split a flat tensor of `shape` into blocks (last axis fastest).
fn partition<B: Backend>(
    x: Tensor<B, 1>,
    shape: &[usize],
    splits: &[Vec<usize>],
) -> Vec<(Tensor<B, 1>, Vec<usize>)> {
    let mut parts = vec![(x, shape.to_vec())];
    for (axis, sizes) in splits.iter().enumerate() {
        if sizes.len() == 1 {
            continue;
        }
        parts = parts
            .into_iter()
            .flat_map(|(t, s)| {
                let [a, n, c] = dims3(&s, axis);
                let t3 = t.reshape([a, n, c]);
                let mut start = 0;
                sizes
                    .iter()
                    .map(|&len| {
                        let piece = t3.clone().slice([0..a, start..start + len, 0..c]);
                        start += len;
                        let mut ps = s.clone();
                        ps[axis] = len;
                        (piece.reshape([a * len * c]), ps)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    parts
}

/// Inverse of [`partition`].
#[allow(
    clippy::expect_used,
    reason = "invariant: a partition has at least one block"
)]
fn merge<B: Backend>(
    mut parts: Vec<(Tensor<B, 1>, Vec<usize>)>,
    splits: &[Vec<usize>],
) -> Tensor<B, 1> {
    for (axis, sizes) in splits.iter().enumerate().rev() {
        if sizes.len() == 1 {
            continue;
        }
        let k = sizes.len();
        let mut merged = Vec::with_capacity(parts.len() / k);
        let mut it = parts.into_iter();
        while let Some(first) = it.next() {
            let mut group = vec![first];
            group.extend(it.by_ref().take(k - 1));
            let mut shape = group[0].1.clone();
            shape[axis] = group.iter().map(|(_, s)| s[axis]).sum();
            let pieces: Vec<Tensor<B, 3>> = group
                .into_iter()
                .map(|(t, s)| t.reshape(dims3(&s, axis)))
                .collect();
            let n: usize = shape.iter().product();
            merged.push((Tensor::cat(pieces, 1).reshape([n]), shape));
        }
        parts = merged;
    }
    parts
        .pop()
        .map(|(t, _)| t)
        .expect("partition of a non-empty tensor has at least one block")
}

/// The block with `axis` unfolded to the rows: `[n, rest]` (mode-`axis` matricization; the
/// other axes keep their order).
fn unfold<B: Backend>(block: Tensor<B, 1>, shape: &[usize], axis: usize) -> Tensor<B, 2> {
    let [a, n, c] = dims3(shape, axis);
    if a == 1 {
        block.reshape([n, c])
    } else {
        block.reshape([a, n, c]).swap_dims(0, 1).reshape([n, a * c])
    }
}

/// Inverse of [`unfold`].
fn fold<B: Backend>(x: Tensor<B, 2>, shape: &[usize], axis: usize) -> Tensor<B, 1> {
    let [a, n, c] = dims3(shape, axis);
    if a == 1 {
        x.reshape([n * c])
    } else {
        x.reshape([n, a, c]).swap_dims(0, 1).reshape([a * n * c])
    }
}

/// `Σ_{rest} B[…a…] B[…b…]` for axis `axis` of a block: `[n, n]`, as one matrix product of
/// the unfolded block with its transpose (no per-slice temporaries).
fn gram<B: Backend>(block: &Tensor<B, 1>, shape: &[usize], axis: usize) -> Tensor<B, 2> {
    let x = unfold(block.clone(), shape, axis);
    x.clone().matmul(x.transpose())
}

/// Mode product along `axis`: `B'[…b…] = Σ_a P[a, b] B[…a…]`, i.e. `Pᵀ · unfold(B)`.
fn mode_product<B: Backend>(
    block: Tensor<B, 1>,
    shape: &[usize],
    axis: usize,
    p: &Tensor<B, 2>,
) -> Tensor<B, 1> {
    let x = unfold(block, shape, axis);
    fold(p.clone().transpose().matmul(x), shape, axis)
}

crate::state_view! {
    /// pytorch_optimizer `Shampoo`'s state ([`ShampooMomentum::LerpPrevious`]): per block
    /// and axis `k` the statistic `pre_cond_k` and root `inv_pre_cond_k` (the leading run,
    /// names from [`ScaleByShampoo::preconditioner_names`]), the previous update, and the
    /// graft's statistics (AdaGrad, RMSProp and Adam grafts).
    pub(crate) struct ShampooLerpState {
        counters { step, root_failures }
        leading tensors { preconditioners }
        tensors { momentum_buffer }
        optional tensors { graft_statistics = "graft.statistics" }
    }
}

crate::state_view! {
    /// ScalableShampoo's state ([`ShampooMomentum::Heavy`]): per block and axis `k`
    /// `pre_conditioner.statistics.k` and `pre_conditioner.pre_conditioners.k` (the leading
    /// run), the momentum of the Shampoo and of the graft direction, the graft's statistics.
    pub(crate) struct ShampooHeavyState {
        counters { step, root_failures }
        leading tensors { preconditioners }
        tensors { momentum, graft_momentum = "graft.momentum" }
        optional tensors { graft_statistics = "graft.statistics" }
    }
}

/// One preconditioner: statistic `S_k` and inverse root `S_k^(−1/p)`, both `d × d`, flat.
struct Preconditioner<'a, B: Backend> {
    statistics: &'a mut Tensor<B, 1>,
    root: &'a mut Tensor<B, 1>,
}

/// The leading run's tensors as preconditioners, `k = block·rank + axis` in order.
fn preconditioners<B: Backend>(run: &mut [StateTensor<B>]) -> Vec<Preconditioner<'_, B>> {
    run.chunks_exact_mut(2)
        .filter_map(|pair| match pair {
            [statistics, root] => Some(Preconditioner {
                statistics: &mut statistics.tensor,
                root: &mut root.tensor,
            }),
            _ => None,
        })
        .collect()
}

/// What the Shampoo direction reads and advances, from either state view.
struct Preconditioning<'a, B: Backend> {
    root_failures: &'a mut u64,
    preconditioners: &'a mut [StateTensor<B>],
    graft_statistics: Option<&'a mut Tensor<B, 1>>,
}

impl ScaleByShampoo {
    /// The leading run's names: statistic and root of each preconditioner, in order (none
    /// when the tensor is not preconditioned).
    pub(super) fn preconditioner_names(&self, layout: &Layout) -> Vec<&'static str> {
        if !layout.preconditioned {
            return Vec::new();
        }
        let count: usize = layout.blocks.iter().map(Vec::len).sum();
        (0..count)
            .flat_map(|k| [self.stat_name(k), self.root_name(k)])
            .collect()
    }

    /// The leading run of a fresh state: `S_k = matrix_eps·I` and the initial root.
    fn fresh_preconditioners<B: Backend>(
        &self,
        layout: &Layout,
        device: &B::Device,
    ) -> Vec<StateTensor<B>> {
        let mut tensors = Vec::new();
        if !layout.preconditioned {
            return tensors;
        }
        let dims = layout.blocks.iter().flat_map(|block| block.iter().copied());
        for (k, d) in dims.enumerate() {
            let eye = Tensor::<B, 2>::eye(d, device);
            tensors.push(StateTensor {
                name: self.stat_name(k),
                shape: vec![d, d],
                tensor: eye
                    .clone()
                    .mul_scalar(self.matrix_eps as f32)
                    .reshape([d * d]),
            });
            let root = match self.initial_root {
                InitialRoot::Zero => eye.zeros_like(),
                InitialRoot::Identity => eye,
            };
            tensors.push(StateTensor {
                name: self.root_name(k),
                shape: vec![d, d],
                tensor: root.reshape([d * d]),
            });
        }
        tensors
    }

    /// pytorch_optimizer Shampoo: momentum lerp toward the previous update, then L2; the
    /// statistics see the result.
    fn lerp_previous<B: Backend>(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        previous: &Tensor<B, 1>,
        mu: f64,
        t: u64,
    ) -> Tensor<B, 1> {
        let mut g = g;
        if t > 1 && mu > 0.0 {
            g = lerp(g, previous.clone(), mu);
        } else if mu > 0.0 && self.raw_initial_buffer {
            // The reference's first buffer is the gradient before the maximize flip.
            g = lerp(g.clone(), g.neg(), mu);
        }
        if self.l2 > 0.0 {
            g = g.add(ctx.param.clone().mul_scalar(self.l2 as f32));
        }
        g
    }

    /// The graft's direction; its statistics (if any) first take in this gradient.
    fn graft_direction<B: Backend>(
        &self,
        g: &Tensor<B, 1>,
        statistics: Option<&mut Tensor<B, 1>>,
        t: u64,
    ) -> Tensor<B, 1> {
        match (self.graft, statistics) {
            (Graft::SqrtN, _) => g.clone().sign(),
            (Graft::AdaGrad | Graft::RmsProp(_) | Graft::Adam(_), Some(statistics)) => {
                let acc = statistics.clone();
                let acc = match self.graft {
                    Graft::RmsProp(b) | Graft::Adam(b) => acc
                        .mul_scalar(b as f32)
                        .add(g.clone().mul_scalar((1.0 - b) as f32).mul(g.clone())),
                    _ => acc.add(g.clone().mul(g.clone())),
                };
                *statistics = acc.clone();
                let denom = match self.graft {
                    Graft::Adam(b) => {
                        let bc = 1.0 - b.powi(i32::try_from(t).unwrap_or(i32::MAX));
                        acc.div_scalar(bc as f32).sqrt()
                    }
                    _ => acc.sqrt(),
                };
                g.clone().div(denom.add_scalar(self.graft_eps as f32))
            }
            // No graft, SGD (the state has graft statistics exactly for the grafts above).
            _ => g.clone(),
        }
    }

    /// Statistics: `S_k ← S_k + G Gᵀ` (or the EMA) for every block and axis.
    fn accumulate_statistics<B: Backend>(
        &self,
        blocks: &[(Tensor<B, 1>, Vec<usize>)],
        rank: usize,
        pre: &mut [Preconditioner<'_, B>],
    ) {
        let axes = blocks
            .iter()
            .flat_map(|(b, s)| (0..rank).map(move |axis| (b, s, axis)));
        for ((b, s, axis), p) in axes.zip(pre.iter_mut()) {
            let d = s[axis];
            let gg = gram(b, s, axis).reshape([d * d]);
            let old = p.statistics.clone();
            *p.statistics = match self.statistics {
                Statistics::Sum => old.add(gg),
                Statistics::Ema(b2) => old
                    .mul_scalar(b2 as f32)
                    .add(gg.mul_scalar((1.0 - b2) as f32)),
            };
        }
    }

    /// Roots: `S_k^(−1/p)` by the coupled Newton iteration; a failure keeps the previous root
    /// and counts in `root_failures`.
    fn refresh_roots<B: Backend>(
        &self,
        layout: &Layout,
        pre: &mut [Preconditioner<'_, B>],
        root_failures: &mut u64,
    ) {
        let dims = layout.blocks.iter().flat_map(|block| block.iter().copied());
        for (d, p) in dims.zip(pre.iter_mut()) {
            let st = p.statistics.clone();
            match inverse_root(st.reshape([d, d]), layout.exponent, &self.root) {
                Ok(r) => *p.root = r.reshape([d * d]),
                Err(_) => *root_failures = root_failures.saturating_add(1),
            }
        }
    }

    /// Shampoo's direction for a preconditioned tensor: statistics, roots (when due), then
    /// every block multiplied along every axis by its root.
    fn preconditioned<B: Backend>(
        &self,
        g: Tensor<B, 1>,
        layout: &Layout,
        state: Preconditioning<'_, B>,
        t: u64,
    ) -> Tensor<B, 1> {
        let blocks = partition(g, &layout.tshape, &layout.splits);
        let rank = layout.tshape.len();
        let mut pre = preconditioners(state.preconditioners);
        if t.is_multiple_of(self.statistics_frequency.max(1)) {
            self.accumulate_statistics(&blocks, rank, &mut pre);
        }
        if t.is_multiple_of(self.precondition_frequency.max(1)) {
            self.refresh_roots(layout, &mut pre, state.root_failures);
        }
        let out: Vec<(Tensor<B, 1>, Vec<usize>)> = blocks
            .into_iter()
            .zip(pre.chunks(rank.max(1)))
            .map(|((mut b, s), roots)| {
                for (axis, p) in roots.iter().enumerate() {
                    let d = s[axis];
                    let r = p.root.clone().reshape([d, d]);
                    b = mode_product(b, &s, axis, &r);
                }
                (b, s)
            })
            .collect();
        merge(out, &layout.splits)
    }

    /// The Shampoo and the graft direction of `g` (the Shampoo one grafted to the graft's
    /// norm), before momentum.
    fn directions<B: Backend>(
        &self,
        g: Tensor<B, 1>,
        layout: &Layout,
        mut state: Preconditioning<'_, B>,
        t: u64,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        // Graft statistics (before use, including this gradient).
        let graft_grad = self.graft_direction(&g, state.graft_statistics.take(), t);
        let mut shampoo_grad = if layout.preconditioned {
            self.preconditioned(g.clone(), layout, state, t)
        } else {
            graft_grad.clone()
        };
        if self.graft != Graft::None && layout.preconditioned {
            let gn = graft_grad.clone().square().sum().sqrt();
            let sn = shampoo_grad.clone().square().sum().sqrt().add_scalar(1e-16);
            shampoo_grad = shampoo_grad.mul(gn.div(sn));
        }
        (shampoo_grad, graft_grad)
    }

    /// ScalableShampoo's momentum on both directions (coupled decay first), Nesterov
    /// optional; the graft's before `start_preconditioning_step`.
    fn heavy_momentum<B: Backend>(
        &self,
        ctx: &StepCtx<'_, B>,
        (mut shampoo_grad, mut graft_grad): (Tensor<B, 1>, Tensor<B, 1>),
        momentum: &mut Tensor<B, 1>,
        graft_momentum: &mut Tensor<B, 1>,
        (beta1, nesterov, moving_average): (f64, bool, bool),
        t: u64,
    ) -> Tensor<B, 1> {
        if self.l2 > 0.0 {
            let decay = ctx.param.clone().mul_scalar(self.l2 as f32);
            graft_grad = graft_grad.add(decay.clone());
            shampoo_grad = shampoo_grad.add(decay);
        }
        let ema = |m: Tensor<B, 1>, d: Tensor<B, 1>, w: f64| {
            if moving_average {
                lerp(m, d, 1.0 - beta1)
            } else {
                m.mul_scalar(beta1 as f32).add(d.mul_scalar(w as f32))
            }
        };
        let m = ema(momentum.clone(), shampoo_grad.clone(), 1.0);
        let gm = ema(graft_momentum.clone(), graft_grad.clone(), 1.0);
        *momentum = m.clone();
        *graft_momentum = gm.clone();
        let use_shampoo = t >= self.start_preconditioning_step;
        let (mu, wu) = if use_shampoo {
            (m, shampoo_grad)
        } else {
            (gm, graft_grad)
        };
        if nesterov { ema(mu, wu, 1.0) } else { mu }
    }
}

impl<B: Backend> Transform<B> for ScaleByShampoo {
    fn name(&self) -> &'static str {
        "scale_by_shampoo"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let layout = self.layout(shape);
        let preconditioners = self.fresh_preconditioners(&layout, device);
        let zeros = || Fresh::zeros(shape, device);
        let graft_statistics = matches!(
            self.graft,
            Graft::AdaGrad | Graft::RmsProp(_) | Graft::Adam(_)
        )
        .then(|| [zeros()]);
        Ok(match self.momentum {
            ShampooMomentum::LerpPrevious(_) => {
                ShampooLerpState::init(preconditioners, [zeros()], graft_statistics)
            }
            ShampooMomentum::Heavy { .. } => {
                ShampooHeavyState::init(preconditioners, [zeros(), zeros()], graft_statistics)
            }
        })
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let layout = self.layout(ctx.shape);
        let names = self.preconditioner_names(&layout);
        match self.momentum {
            ShampooMomentum::LerpPrevious(mu) => {
                let s = ShampooLerpState::view(state, &names);
                let t = s.step.saturating_add(1);
                *s.step = t;
                if n == 0 {
                    return g;
                }
                let g = self.lerp_previous(ctx, g, s.momentum_buffer, mu, t);
                let state = Preconditioning {
                    root_failures: s.root_failures,
                    preconditioners: s.preconditioners,
                    graft_statistics: s.graft_statistics,
                };
                let (shampoo_grad, _) = self.directions(g, &layout, state, t);
                *s.momentum_buffer = shampoo_grad.clone();
                shampoo_grad
            }
            ShampooMomentum::Heavy {
                beta1,
                nesterov,
                moving_average,
            } => {
                let s = ShampooHeavyState::view(state, &names);
                let t = s.step.saturating_add(1);
                *s.step = t;
                if n == 0 {
                    return g;
                }
                let state = Preconditioning {
                    root_failures: s.root_failures,
                    preconditioners: s.preconditioners,
                    graft_statistics: s.graft_statistics,
                };
                let directions = self.directions(g, &layout, state, t);
                let flags = (beta1, nesterov, moving_average);
                self.heavy_momentum(ctx, directions, s.momentum, s.graft_momentum, flags, t)
            }
        }
    }
}
