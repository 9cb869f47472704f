//! The test transformer: a small pre-norm causal LM (RMSNorm, rotary multi-head attention,
//! SwiGLU or SiLU MLP) with stable, readable parameter paths.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::corpus::{ModelError, SplitMix64};

/// The MLP of each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) ⊙ up(x))` (LLaMA).
    SwiGlu,
    /// `down(silu(up(x)))`.
    Silu,
}

/// Configuration of [`TestModel`] / [`TestModelForCausalLM`]; start from a preset
/// ([`TestModelConfig::tiny`], [`TestModelConfig::small`], [`TestModelConfig::original`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestModelConfig {
    /// Vocabulary size (≥ 2).
    pub vocab: usize,
    /// Model width (divisible by `heads`, head width even for rotary positions).
    pub hidden: usize,
    /// Number of blocks (≥ 1).
    pub layers: usize,
    /// Attention heads (≥ 1).
    pub heads: usize,
    /// MLP width (≥ 1).
    pub intermediate: usize,
    /// Longest sequence the model accepts (≥ 1).
    pub max_seq_len: usize,
    /// MLP kind.
    pub mlp: MlpKind,
    /// Dropout on attention probabilities and on both residual branches, in `[0, 1)`.
    pub dropout: f64,
    /// Use the token embedding as the LM head (no `lm_head` parameter).
    pub tie_embeddings: bool,
    /// Biases in the linear layers (zero-initialised).
    pub bias: bool,
    /// Rotary base θ (> 0).
    pub rope_theta: f64,
    /// RMSNorm ε (> 0).
    pub norm_eps: f64,
    /// Standard deviation of the normal initialisation (> 0); the residual output
    /// projections (`o_proj`, `down_proj`) use `init_std / √(2·layers)` (GPT-2).
    pub init_std: f64,
    /// Initialisation seed (host SplitMix64: identical parameters on every backend).
    pub seed: u64,
}

impl TestModelConfig {
    /// ≈ 0.47M parameters at vocab 256: width 128, 2 layers, 4 heads, SwiGLU 352.
    pub fn tiny(vocab: usize) -> Self {
        Self {
            vocab,
            hidden: 128,
            layers: 2,
            heads: 4,
            intermediate: 352,
            max_seq_len: 256,
            mlp: MlpKind::SwiGlu,
            dropout: 0.0,
            tie_embeddings: false,
            bias: false,
            rope_theta: 10_000.0,
            norm_eps: 1e-6,
            init_std: 0.02,
            seed: 0,
        }
    }

    /// ≈ 4.9M parameters at vocab 256: width 256, 6 layers, 8 heads, SwiGLU 688.
    pub fn small(vocab: usize) -> Self {
        Self {
            hidden: 256,
            layers: 6,
            heads: 8,
            intermediate: 688,
            ..Self::tiny(vocab)
        }
    }

    /// The original Python project's shape: width 768, 2 layers, 12 heads, MLP 3072.
    pub fn original(vocab: usize) -> Self {
        Self {
            hidden: 768,
            layers: 2,
            heads: 12,
            intermediate: 3072,
            max_seq_len: 1024,
            ..Self::tiny(vocab)
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what, value: String, allowed| {
            Err(ModelError::Invalid {
                what,
                value,
                allowed,
            })
        };
        if self.vocab < 2 {
            return bad("vocab", self.vocab.to_string(), ">= 2");
        }
        for (what, v) in [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("intermediate", self.intermediate),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(what, v.to_string(), ">= 1");
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad(
                "hidden",
                format!("{} with {} heads", self.hidden, self.heads),
                "a multiple of heads",
            );
        }
        if !(self.hidden / self.heads).is_multiple_of(2) {
            return bad(
                "head width",
                (self.hidden / self.heads).to_string(),
                "an even number (rotary positions rotate pairs)",
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout.to_string(), "a value in [0, 1)");
        }
        for (what, v) in [
            ("rope_theta", self.rope_theta),
            ("norm_eps", self.norm_eps),
            ("init_std", self.init_std),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(what, v.to_string(), "a finite value > 0");
            }
        }
        Ok(())
    }

    /// Parameters the model will have (tied head included once).
    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.hidden, self.intermediate, self.vocab);
        let b = usize::from(self.bias);
        let attn = 4 * (d * d + b * d);
        let mlp = match self.mlp {
            MlpKind::SwiGlu => 2 * (d * f + b * f) + f * d + b * d,
            MlpKind::Silu => d * f + b * f + f * d + b * d,
        };
        let block = attn + mlp + 2 * d;
        let head = if self.tie_embeddings {
            0
        } else {
            d * v + b * v
        };
        v * d + self.layers * block + d + head
    }

    /// The trunk, validated and seeded.
    pub fn init_trunk<B: Backend>(&self, device: &B::Device) -> Result<TestModel<B>, ModelError> {
        self.validate()?;
        let mut init = Init {
            rng: SplitMix64::new(self.seed),
            device: device.clone(),
        };
        Ok(self.trunk(&mut init))
    }

    /// The causal LM (trunk + head), validated and seeded.
    pub fn init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TestModelForCausalLM<B>, ModelError> {
        self.validate()?;
        let mut init = Init {
            rng: SplitMix64::new(self.seed),
            device: device.clone(),
        };
        let model = self.trunk(&mut init);
        let lm_head = (!self.tie_embeddings)
            .then(|| init.linear(self.hidden, self.vocab, self.init_std, self.bias));
        Ok(TestModelForCausalLM {
            model,
            lm_head,
            vocab: self.vocab,
        })
    }

    fn trunk<B: Backend>(&self, init: &mut Init<B>) -> TestModel<B> {
        let (d, f) = (self.hidden, self.intermediate);
        let std = self.init_std;
        let resid = std / (2.0 * self.layers as f64).sqrt();
        let embed = Embedding {
            weight: Param::from_tensor(init.normal([self.vocab, d], std)),
        };
        let blocks = (0..self.layers)
            .map(|_| Block {
                attn_norm: RmsNorm::new(d, self.norm_eps, &init.device),
                attn: Attention {
                    q_proj: init.linear(d, d, std, self.bias),
                    k_proj: init.linear(d, d, std, self.bias),
                    v_proj: init.linear(d, d, std, self.bias),
                    o_proj: init.linear(d, d, resid, self.bias),
                    heads: self.heads,
                    rope_theta: self.rope_theta,
                    dropout: DropoutConfig::new(self.dropout).init(),
                },
                mlp_norm: RmsNorm::new(d, self.norm_eps, &init.device),
                mlp: Mlp {
                    gate_proj: (self.mlp == MlpKind::SwiGlu)
                        .then(|| init.linear(d, f, std, self.bias)),
                    up_proj: init.linear(d, f, std, self.bias),
                    down_proj: init.linear(f, d, resid, self.bias),
                },
                dropout: DropoutConfig::new(self.dropout).init(),
            })
            .collect();
        TestModel {
            embed,
            blocks,
            norm: RmsNorm::new(d, self.norm_eps, &init.device),
            max_seq_len: self.max_seq_len,
        }
    }
}

/// Deterministic host-side initialisation.
struct Init<B: Backend> {
    rng: SplitMix64,
    device: B::Device,
}

impl<B: Backend> Init<B> {
    fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.rng.normal() * std) as f32).collect();
        Tensor::from_data(TensorData::new(v, shape), &self.device)
    }

    /// burn's `Linear` layout: weight `[d_in, d_out]`, `y = x·W + b`.
    fn linear(&mut self, d_in: usize, d_out: usize, std: f64, bias: bool) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.normal([d_in, d_out], std)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        }
    }
}

/// Root-mean-square layer norm: `x / √(mean(x²) + ε) ⊙ weight` (weight starts at 1).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// ε.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            eps,
        }
    }

    /// Normalise the last axis of `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x.dims()[2];
        let rms = x.clone().square().mean_dim(2).add_scalar(self.eps).sqrt();
        x.div(rms).mul(self.weight.val().reshape([1, 1, d]))
    }
}

/// Causal multi-head self-attention with rotary positions (half-split rotation, as GPT-NeoX
/// and HF LLaMA).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection (residual branch).
    pub o_proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
    /// Rotary base.
    pub rope_theta: f64,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
}

impl<B: Backend> Attention<B> {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`; position `t` attends to `0..=t`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let h = self.heads;
        let hd = d / h;
        let device = x.device();
        let split = |t: Tensor<B, 3>| t.reshape([b, s, h, hd]).swap_dims(1, 2);
        let (cos, sin) = rotary_tables::<B>(s, hd, self.rope_theta, &device);
        let q = rotate(split(self.q_proj.forward(x.clone())), &cos, &sin);
        let k = rotate(split(self.k_proj.forward(x.clone())), &cos, &sin);
        let v = split(self.v_proj.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt());
        let mask = Tensor::<B, 2>::from_data(
            TensorData::new(
                (0..s * s)
                    .map(|i| if i % s > i / s { -1e9f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                [s, s],
            ),
            &device,
        )
        .reshape([1, 1, s, s]);
        let probs = self.dropout.forward(softmax(scores.add(mask), 3));
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, s, d]);
        self.o_proj.forward(out)
    }
}

/// `cos`, `sin` of the rotary angles `t·θ^(−2i/hd)`, `[1, 1, s, hd/2]`.
fn rotary_tables<B: Backend>(
    s: usize,
    hd: usize,
    theta: f64,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let half = hd / 2;
    let mut cos = Vec::with_capacity(s * half);
    let mut sin = Vec::with_capacity(s * half);
    for t in 0..s {
        for i in 0..half {
            let angle = t as f64 * theta.powf(-2.0 * i as f64 / hd as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let mk = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, s, half]), device);
    (mk(cos), mk(sin))
}

/// Rotate `[b, h, s, hd]` by position: `(x1, x2) ↦ (x1·cos − x2·sin, x2·cos + x1·sin)`.
fn rotate<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let hd = x.dims()[3];
    let half = hd / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(
        vec![
            x1.clone().mul(cos.clone()).sub(x2.clone().mul(sin.clone())),
            x2.mul(cos.clone()).add(x1.mul(sin.clone())),
        ],
        3,
    )
}

/// The block's MLP.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection (SwiGLU only).
    pub gate_proj: Option<Linear<B>>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection (residual branch).
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[batch, seq, hidden]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let up = self.up_proj.forward(x.clone());
        let act = match &self.gate_proj {
            Some(gate) => silu(gate.forward(x)).mul(up),
            None => silu(up),
        };
        self.down_proj.forward(act)
    }
}

/// Pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub attn_norm: RmsNorm<B>,
    /// Attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub mlp_norm: RmsNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
    /// Residual dropout.
    pub dropout: Dropout,
}

impl<B: Backend> Block<B> {
    /// `[batch, seq, hidden]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone().add(
            self.dropout
                .forward(self.attn.forward(self.attn_norm.forward(x))),
        );
        x.clone().add(
            self.dropout
                .forward(self.mlp.forward(self.mlp_norm.forward(x))),
        )
    }
}

/// The trunk: token embedding → blocks → final RMSNorm → hidden states. Parameter paths:
/// `embed.weight`, `blocks.{i}.attn_norm.weight`, `blocks.{i}.attn.{q,k,v,o}_proj.weight`,
/// `blocks.{i}.mlp_norm.weight`, `blocks.{i}.mlp.{gate,up,down}_proj.weight`, `norm.weight`
/// (`.bias` too with `bias: true`). Linear weights use burn's layout `[d_in, d_out]`.
#[derive(Module, Debug)]
pub struct TestModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed: Embedding<B>,
    /// The blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Longest accepted sequence.
    pub max_seq_len: usize,
}

impl<B: Backend> TestModel<B> {
    /// Hidden states `[batch, seq, hidden]` for tokens `[batch, seq]`; errors on an empty or
    /// too long sequence and on token ids outside the vocabulary (one small read-back).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, ModelError> {
        let [b, s] = tokens.dims();
        if b == 0 || s == 0 || s > self.max_seq_len {
            return Err(ModelError::Input {
                reason: format!(
                    "tokens of shape [{b}, {s}]: need batch >= 1 and 1 <= seq <= max_seq_len = {}",
                    self.max_seq_len
                ),
            });
        }
        let vocab = self.embed.weight.dims()[0];
        let (lo, hi) = int_range(&tokens);
        if lo < 0 || hi >= vocab as i64 {
            return Err(ModelError::Input {
                reason: format!("token ids span [{lo}, {hi}], the vocabulary is 0..{vocab}"),
            });
        }
        let x = self.embed.forward(tokens);
        let x = self.blocks.iter().fold(x, |x, blk| blk.forward(x));
        Ok(self.norm.forward(x))
    }
}

fn int_range<B: Backend, const D: usize>(t: &Tensor<B, D, Int>) -> (i64, i64) {
    let n = t.dims().iter().product::<usize>();
    let flat = t.clone().reshape([n]);
    let both = Tensor::cat(vec![flat.clone().min(), flat.max()], 0);
    let v = both.into_data().convert::<i64>();
    let v = v.as_slice::<i64>().map(<[i64]>::to_vec).unwrap_or_default();
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    )
}

/// Target id that does not count in the loss (as PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Logits `[batch, seq, vocab]` and, when targets were given, the mean cross-entropy over the
/// targets that are not [`IGNORE_INDEX`] (`[1]`, nats).
#[derive(Debug, Clone)]
pub struct CausalLmOutput<B: Backend> {
    /// Logits.
    pub logits: Tensor<B, 3>,
    /// Mean loss, if targets were given.
    pub loss: Option<Tensor<B, 1>>,
}

/// Trunk + LM head (`lm_head.weight` `[hidden, vocab]`, or the transposed embedding when tied).
#[derive(Module, Debug)]
pub struct TestModelForCausalLM<B: Backend> {
    /// The trunk (paths `model.…`).
    pub model: TestModel<B>,
    /// LM head; `None` when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// Vocabulary size.
    pub vocab: usize,
}

impl<B: Backend> TestModelForCausalLM<B> {
    /// Logits and (with `targets`, `[batch, seq]`, ids or [`IGNORE_INDEX`]) the loss.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        targets: Option<Tensor<B, 2, Int>>,
    ) -> Result<CausalLmOutput<B>, ModelError> {
        let [b, s] = tokens.dims();
        if let Some(t) = &targets
            && t.dims() != [b, s]
        {
            return Err(ModelError::Input {
                reason: format!("targets of shape {:?}, tokens are [{b}, {s}]", t.dims()),
            });
        }
        let h = self.model.forward(tokens)?;
        let d = h.dims()[2];
        let flat = h.reshape([b * s, d]);
        let logits = match &self.lm_head {
            Some(head) => head.forward(flat),
            None => flat.matmul(self.model.embed.weight.val().transpose()),
        };
        let loss = match targets {
            Some(t) => Some(self.loss_of(logits.clone(), t)?),
            None => None,
        };
        Ok(CausalLmOutput {
            logits: logits.reshape([b, s, self.vocab]),
            loss,
        })
    }

    fn loss_of(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 1>, ModelError> {
        let n = logits.dims()[0];
        let t = targets.reshape([n]);
        let keep = t.clone().not_equal_elem(IGNORE_INDEX);
        let safe = t.clone().mask_fill(keep.clone().bool_not(), 0);
        let (lo, hi) = int_range(&safe);
        let count = keep.clone().int().sum().into_scalar().elem::<i64>();
        if lo < 0 || hi >= self.vocab as i64 {
            return Err(ModelError::Input {
                reason: format!(
                    "target ids span [{lo}, {hi}] (besides {IGNORE_INDEX}), the vocabulary is 0..{}",
                    self.vocab
                ),
            });
        }
        if count == 0 {
            return Err(ModelError::Input {
                reason: format!("every target is {IGNORE_INDEX}: the loss is undefined"),
            });
        }
        let nll = log_softmax(logits, 1)
            .gather(1, safe.reshape([n, 1]))
            .reshape([n])
            .neg();
        Ok(nll
            .mul(keep.float())
            .sum()
            .div_scalar(count as f64)
            .reshape([1]))
    }
}
