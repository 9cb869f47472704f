//! # moment-model
//!
//! Models and data to exercise optimizers on, knowing nothing about optimizers.
//!
//! * [`TestModel`] (token embedding → pre-norm blocks with rotary causal attention and a
//!   SwiGLU/SiLU MLP → final RMSNorm) and [`TestModelForCausalLM`] (+ LM head, optional tying,
//!   cross-entropy with [`IGNORE_INDEX`]), configured by [`TestModelConfig`] presets `tiny`
//!   (≈ 0.5M parameters), `small` (≈ 5M) and `original` (width 768, 2 layers), seeded on the
//!   host so every backend gets identical parameters. With the `train` feature (default) the
//!   causal LM is a burn-train `TrainStep`/`InferenceStep`.
//! * [`MarkovCorpus`]: a seeded order-k Markov chain over `V` tokens (Dirichlet or softmax
//!   rows) whose entropy rate — the best achievable next-token loss in nats — is computed
//!   exactly; [`ByteCorpus`]: the bytes of any UTF-8 file. Both are [`Corpus`]es with
//!   deterministic train/validation streams, batched by [`TokenBatch`].
//! * [`BigramLm`]: a smaller next-token model (embedding → SiLU layer → head).
//!
//! Nothing is downloaded at build or run time.

mod corpus;
mod lm;
#[cfg(feature = "train")]
mod train;
mod transformer;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub use corpus::{
    ByteCorpus, Corpus, MAX_MARKOV_ENTRIES, MarkovConfig, MarkovCorpus, ModelError, RowPrior,
    Split, SplitMix64, TokenBatch,
};
pub use lm::{BigramLm, BigramLmConfig, sample_batch};
pub use transformer::{
    Attention, Block, CausalLmOutput, IGNORE_INDEX, Mlp, MlpKind, RmsNorm, TestModel,
    TestModelConfig, TestModelForCausalLM,
};

/// A batch as tensors: inputs and next-token targets, `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct CausalLmBatch<B: Backend> {
    /// Token ids.
    pub inputs: Tensor<B, 2, Int>,
    /// Next-token ids (or [`IGNORE_INDEX`]).
    pub targets: Tensor<B, 2, Int>,
}

impl TokenBatch {
    /// Upload to `device`.
    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> CausalLmBatch<B> {
        let shape = [self.batch, self.seq_len];
        CausalLmBatch {
            inputs: Tensor::from_data(TensorData::new(self.inputs.clone(), shape), device),
            targets: Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
        }
    }
}
