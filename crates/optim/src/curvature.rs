//! Curvature estimators for Sophia, fed to the optimizer with
//! [`MomentOptimizer::update_curvature`](crate::MomentOptimizer::update_curvature) (or
//! [`ModuleOptimizer::update_curvature`](crate::ModuleOptimizer::update_curvature)) every k
//! steps.
//!
//! * [`GnbEstimator`] — Sophia-G's Gauss-Newton-Bartlett estimator: sample labels from the
//!   model's own softmax with a seeded RNG and backpropagate the cross-entropy to those labels;
//!   the resulting gradient `ĝ` is the estimate (the optimizer squares it into its EMA).
//! * [`Hutchinson`] — Sophia-H's diagonal estimator `z ⊙ (H z)` with Rademacher or Gaussian
//!   probes. burn 0.21 has no double backward, so `H z` comes from a central difference of two
//!   gradients, `(∇L(θ + εz) − ∇L(θ − εz)) / 2ε` (exact for quadratics).
//!
//! Both draw from their own seeded generator (SplitMix64), so runs are bitwise reproducible on
//! CPU and independent of burn's global seed.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::{OptimError, Result};
use crate::stats::tensor_values;

/// SplitMix64: a small, seedable, well-distributed generator.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Sophia-G's Gauss-Newton-Bartlett estimator (Liu et al. 2023, Algorithm 2), run every
/// `every` steps:
///
/// ```text
/// if gnb.due(step) {
///     let loss = gnb.sampled_loss(model.forward(batch));     // labels ~ softmax(logits)
///     let grads = GradientsParams::from_grads(loss.backward(), &model);
///     optim.update_curvature(&model, grads)?;                 // h ← β2·h + (1−β2)·ĝ⊙ĝ
/// }
/// ```
///
/// The loss is the mean over rows, so the batch factor of the estimator is Sophia-G's `bs`
/// (tokens per step), as in the official training script.
#[derive(Debug, Clone)]
pub struct GnbEstimator {
    every: u64,
    rng: SplitMix64,
}

impl GnbEstimator {
    /// An estimator due every `every ≥ 1` steps, sampling with `seed`.
    pub fn new(every: u64, seed: u64) -> Result<Self> {
        if every == 0 {
            return Err(OptimError::invalid(
                "sophia",
                "every",
                0,
                "an estimation interval k >= 1",
            ));
        }
        Ok(Self {
            every,
            rng: SplitMix64(seed),
        })
    }

    /// Whether an estimate is due after `completed_steps` optimizer steps
    /// (`completed_steps % k == 0`).
    pub fn due(&self, completed_steps: u64) -> bool {
        completed_steps.is_multiple_of(self.every)
    }

    /// One label per row of `logits` (`[rows, classes]`), drawn from `softmax(row)` (computed in
    /// f64 on the host). Rows with non-finite logits are an error.
    pub fn sample_labels<B: Backend>(
        &mut self,
        logits: &Tensor<B, 2>,
    ) -> Result<Tensor<B, 1, Int>> {
        let [rows, classes] = logits.dims();
        let values = tensor_values(&logits.clone().reshape([rows * classes]));
        let mut labels = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &values[r * classes..(r + 1) * classes];
            if row.iter().any(|x| !x.is_finite()) {
                return Err(OptimError::NonFiniteGradient {
                    first_path: format!("logits[{r}]"),
                    paths: vec![format!("logits[{r}]")],
                    count: row.iter().filter(|x| !x.is_finite()).count() as u64,
                });
            }
            let max = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
            let weights: Vec<f64> = row.iter().map(|&x| (f64::from(x) - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut u = self.rng.next_f64() * total;
            let mut label = classes.saturating_sub(1);
            for (c, w) in weights.iter().enumerate() {
                if u < *w {
                    label = c;
                    break;
                }
                u -= w;
            }
            labels.push(label as i64);
        }
        Ok(Tensor::from_data(
            TensorData::new(labels, [rows]),
            &logits.device(),
        ))
    }

    /// Mean cross-entropy of `logits` (`[rows, classes]`) against labels sampled from the
    /// model's own softmax ([`Self::sample_labels`]); backpropagate it for the estimate.
    pub fn sampled_loss<B: Backend>(&mut self, logits: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let labels = self.sample_labels(&logits)?;
        let rows = logits.dims()[0];
        Ok(log_softmax(logits, 1)
            .gather(1, labels.reshape([rows, 1]))
            .mean()
            .neg())
    }
}

/// The probe distribution of [`Hutchinson`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe {
    /// ±1 with equal probability (lowest variance; exact for a diagonal Hessian).
    #[default]
    Rademacher,
    /// Standard normal (pytorch_optimizer's `hessian_distribution='gaussian'`).
    Gaussian,
}

/// Sophia-H's Hutchinson estimator of the Hessian diagonal, `E[z ⊙ (H z)] = diag(H)`.
#[derive(Debug, Clone)]
pub struct Hutchinson {
    probe: Probe,
    eps: f64,
    rng: SplitMix64,
}

impl Hutchinson {
    /// Probes of kind `probe`, finite-difference step `eps > 0` (1e-3 is a good start for f32),
    /// drawn with `seed`.
    pub fn new(probe: Probe, eps: f64, seed: u64) -> Result<Self> {
        if !(eps > 0.0 && (eps as f32).is_normal()) {
            return Err(OptimError::invalid(
                "sophia",
                "eps",
                eps,
                "a finite-difference step > 0, normal in f32",
            ));
        }
        Ok(Self {
            probe,
            eps,
            rng: SplitMix64(seed),
        })
    }

    /// The finite-difference step ε.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// A fresh probe vector `z` of `n` elements.
    pub fn probe<B: Backend>(&mut self, n: usize, device: &B::Device) -> Tensor<B, 1> {
        let z: Vec<f32> = (0..n)
            .map(|_| match self.probe {
                Probe::Rademacher => {
                    if self.rng.next_u64() >> 63 == 0 {
                        1.0
                    } else {
                        -1.0
                    }
                }
                Probe::Gaussian => self.rng.next_normal() as f32,
            })
            .collect();
        Tensor::from_data(TensorData::new(z, [n]), device)
    }

    /// `θ ± ε·z`: the two points at which to evaluate the gradient.
    pub fn points<B: Backend>(&self, theta: &Tensor<B, 1>, z: &Tensor<B, 1>) -> [Tensor<B, 1>; 2] {
        let step = z.clone().mul_scalar(self.eps as f32);
        [theta.clone().add(step.clone()), theta.clone().sub(step)]
    }

    /// The estimate `z ⊙ (∇L(θ+εz) − ∇L(θ−εz)) / 2ε`.
    pub fn estimate<B: Backend>(
        &self,
        z: &Tensor<B, 1>,
        grad_plus: Tensor<B, 1>,
        grad_minus: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        z.clone()
            .mul(grad_plus.sub(grad_minus))
            .div_scalar((2.0 * self.eps) as f32)
    }
}
