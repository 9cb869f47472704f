use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::lerp;
use crate::error::{OptimError, Result};
use crate::state_view::Fresh;
use crate::stats::tensor_values;
use crate::transform::{StepCtx, Transform, TransformState};

/// Arithmetic of the Newton–Schulz iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NsPrecision {
    /// float32 throughout, in tensor ops on the parameter's device (default).
    #[default]
    F32,
    /// torch's bfloat16 iteration reproduced exactly: every op's output rounded once to bf16
    /// (round to nearest even), products accumulated in f32. Runs on the host (matrices are
    /// read back); needed to match `torch.optim.Muon`, whose bf16 noise a looser f32
    /// comparison could not tell from a missing weight decay.
    Bf16,
}

/// Largest matrix (elements) the host-side bf16 emulation accepts.
pub const BF16_HOST_LIMIT: usize = 1 << 18;

/// How Muon scales the orthogonalized update by the matrix shape `A×B` (rows × cols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MuonScale {
    /// `√max(1, A/B)` (Keller Jordan's Muon, torch `adjust_lr_fn=None`/"original").
    #[default]
    Original,
    /// `0.2·√max(A, B)`: matches AdamW's update RMS (Moonlight, torch "match_rms_adamw").
    MatchRmsAdamW,
    /// `√(A/B)` (torch "spectral_unclamped").
    SpectralUnclamped,
}

/// Muon (Jordan et al. 2024): EMA momentum `buf ← lerp(buf, g, 1−μ)`, Nesterov
/// `u = lerp(g, buf, μ)` (else `buf`), then the quintic Newton–Schulz orthogonalization of `u`
/// (`X ← X/max(‖X‖_F, ε)`, transposed when rows > cols; `steps` × `A = XXᵀ; B = bA + cA²;
/// X = aX + BX`), scaled by [`MuonScale`]. 2-D parameters only: any other rank is a typed error
/// when the parameter is first seen (route them to AdamW with a group). State:
/// `momentum_buffer`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByMuon {
    /// Momentum μ.
    pub momentum: f64,
    /// Nesterov look-ahead.
    pub nesterov: bool,
    /// Newton–Schulz coefficients (a, b, c).
    pub ns_coefficients: (f64, f64, f64),
    /// Newton–Schulz iterations.
    pub ns_steps: usize,
    /// Floor of the Frobenius norm in the normalisation.
    pub eps: f64,
    /// Arithmetic of the iteration.
    pub precision: NsPrecision,
    /// Shape scaling.
    pub scale: MuonScale,
}

crate::state_view! {
    /// Muon's state (torch's name).
    pub(crate) struct MuonState {
        tensors { momentum_buffer }
    }
}

impl<B: Backend> Transform<B> for ScaleByMuon {
    fn name(&self) -> &'static str {
        "scale_by_muon"
    }

    fn init(&self, path: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        if shape.len() != 2 {
            return Err(OptimError::UnsupportedShape {
                transform: "scale_by_muon",
                path: path.to_string(),
                shape: shape.to_vec(),
                reason: "Muon orthogonalizes 2-D weights only; route other parameters (embeddings, norms, biases) to AdamW with a parameter group (see `MuonConfig::groups`)",
            });
        }
        if self.precision == NsPrecision::Bf16 && shape[0] * shape[1] > BF16_HOST_LIMIT {
            return Err(OptimError::UnsupportedShape {
                transform: "scale_by_muon",
                path: path.to_string(),
                shape: shape.to_vec(),
                reason: "the exact bf16 Newton–Schulz emulation runs on the host and is limited to 262,144 elements (512×512); use NsPrecision::F32 for larger matrices",
            });
        }
        Ok(MuonState::init([Fresh::zeros(shape, device)]))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let (rows, cols) = (ctx.shape[0], ctx.shape[1]);
        let s = MuonState::view(state);
        let buf = lerp(s.momentum_buffer.clone(), g.clone(), 1.0 - self.momentum);
        *s.momentum_buffer = buf.clone();
        if rows == 0 || cols == 0 {
            return g;
        }
        let u = if self.nesterov {
            lerp(g, buf, self.momentum)
        } else {
            buf
        };
        let o = match self.precision {
            NsPrecision::F32 => newton_schulz(u.reshape([rows, cols]), self).reshape([rows * cols]),
            NsPrecision::Bf16 => {
                let device = u.device();
                let out = newton_schulz_bf16(&tensor_values(&u), rows, cols, self);
                Tensor::from_data(TensorData::new(out, [rows * cols]), &device)
            }
        };
        let (a, b) = (rows as f64, cols as f64);
        let scale = match self.scale {
            MuonScale::Original => (a / b).max(1.0).sqrt(),
            MuonScale::MatchRmsAdamW => 0.2 * a.max(b).sqrt(),
            MuonScale::SpectralUnclamped => (a / b).sqrt(),
        };
        o.mul_scalar(scale as f32)
    }
}

/// The quintic Newton–Schulz iteration in f32 tensor ops.
fn newton_schulz<B: Backend>(g: Tensor<B, 2>, m: &ScaleByMuon) -> Tensor<B, 2> {
    let [rows, cols] = g.dims();
    let transpose = rows > cols;
    let mut x = if transpose { g.transpose() } else { g };
    let norm = x.clone().square().sum().sqrt().clamp_min(m.eps as f32);
    x = x.div(norm.reshape([1, 1]));
    let (a, b, c) = m.ns_coefficients;
    for _ in 0..m.ns_steps {
        let aa = x.clone().matmul(x.clone().transpose());
        let bb = aa
            .clone()
            .mul_scalar(b as f32)
            .add(aa.clone().matmul(aa).mul_scalar(c as f32));
        x = x.clone().mul_scalar(a as f32).add(bb.matmul(x));
    }
    if transpose { x.transpose() } else { x }
}

/// Round an f32 to the nearest bfloat16 (ties to even), returned as f32.
pub fn round_bf16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

/// `out[i][j] = Σ_k l[i][k]·r[k][j]` with f32 accumulation (row-major `n×k` by `k×m`).
fn matmul(l: &[f32], r: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * m];
    for i in 0..n {
        for p in 0..k {
            let a = l[i * k + p];
            for j in 0..m {
                out[i * m + j] += a * r[p * m + j];
            }
        }
    }
    out
}

/// torch's bf16 Newton–Schulz, emulated exactly (see [`NsPrecision::Bf16`]).
fn newton_schulz_bf16(g: &[f32], rows: usize, cols: usize, m: &ScaleByMuon) -> Vec<f32> {
    let transpose = rows > cols;
    let (r, c) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut x: Vec<f32> = if transpose {
        (0..r * c).map(|ij| g[(ij % c) * cols + ij / c]).collect()
    } else {
        g.to_vec()
    };
    for v in x.iter_mut() {
        *v = round_bf16(*v);
    }
    let norm = round_bf16(x.iter().map(|v| v * v).sum::<f32>().sqrt());
    let denom = norm.max(round_bf16(m.eps as f32));
    for v in x.iter_mut() {
        *v = round_bf16(*v / denom);
    }
    let (a, b, cc) = (
        m.ns_coefficients.0 as f32,
        m.ns_coefficients.1 as f32,
        m.ns_coefficients.2 as f32,
    );
    for _ in 0..m.ns_steps {
        let xt: Vec<f32> = (0..c * r).map(|ij| x[(ij % r) * c + ij / r]).collect();
        let aa: Vec<f32> = matmul(&x, &xt, r, c, r)
            .into_iter()
            .map(round_bf16)
            .collect();
        let a2 = matmul(&aa, &aa, r, r, r);
        let bb: Vec<f32> = aa
            .iter()
            .zip(&a2)
            .map(|(p, q)| round_bf16(b * p + cc * q))
            .collect();
        let bx = matmul(&bb, &x, r, r, c);
        x = x
            .iter()
            .zip(&bx)
            .map(|(p, q)| round_bf16(a * p + q))
            .collect();
    }
    if transpose {
        (0..rows * cols)
            .map(|ij| x[(ij % cols) * c + ij / cols])
            .collect()
    } else {
        x
    }
}
