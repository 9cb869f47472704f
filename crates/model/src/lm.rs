use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::corpus::{MarkovCorpus, ModelError, SplitMix64};

/// Configuration of [`BigramLm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BigramLmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Embedding and hidden width.
    pub hidden: usize,
}

impl BigramLmConfig {
    /// Validate and build on `device` (burn's default initialisers, seeded by the backend).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<BigramLm<B>, ModelError> {
        for (what, v) in [("vocab", self.vocab), ("hidden", self.hidden)] {
            if v == 0 {
                return Err(ModelError::Invalid {
                    what,
                    value: v.to_string(),
                    allowed: ">= 1",
                });
            }
        }
        Ok(BigramLm {
            embed: EmbeddingConfig::new(self.vocab, self.hidden).init(device),
            hidden: LinearConfig::new(self.hidden, self.hidden).init(device),
            head: LinearConfig::new(self.hidden, self.vocab).init(device),
        })
    }
}

/// Next-token model: `head(silu(hidden(embed(x))))`.
#[derive(Module, Debug)]
pub struct BigramLm<B: Backend> {
    /// Token embedding, `[vocab, hidden]`.
    pub embed: Embedding<B>,
    /// Hidden layer.
    pub hidden: Linear<B>,
    /// LM head.
    pub head: Linear<B>,
}

impl<B: Backend> BigramLm<B> {
    /// Logits `[batch, seq, vocab]` for tokens `[batch, seq]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let h = self.embed.forward(tokens);
        self.head.forward(silu(self.hidden.forward(h)))
    }

    /// Mean next-token cross-entropy (nats) of a batch of sequences `[batch, seq]`; needs
    /// `batch >= 1` and `seq >= 2` (one input and one target token).
    pub fn loss(&self, batch: Tensor<B, 2, Int>) -> Result<Tensor<B, 1>, ModelError> {
        let [b, s] = batch.dims();
        if b == 0 || s < 2 {
            return Err(ModelError::Invalid {
                what: "batch shape",
                value: format!("[{b}, {s}]"),
                allowed: "[batch >= 1, seq >= 2]",
            });
        }
        let inputs = batch.clone().slice([0..b, 0..s - 1]);
        let targets = batch.slice([0..b, 1..s]);
        let logits = self.forward(inputs);
        let v = logits.dims()[2];
        let loss = CrossEntropyLossConfig::new().init(&logits.device());
        Ok(loss.forward(
            logits.reshape([b * (s - 1), v]),
            targets.reshape([b * (s - 1)]),
        ))
    }
}

/// A batch `[batch, seq]` of sequences drawn from `corpus`.
pub fn sample_batch<B: Backend>(
    corpus: &MarkovCorpus,
    batch: usize,
    seq: usize,
    rng: &mut SplitMix64,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..batch)
        .flat_map(|_| corpus.sample(seq, rng))
        .map(|t| t as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, seq]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn loss_of_a_uniform_model_is_log_v_and_bad_shapes_are_errors() {
        let device = Default::default();
        let mut m = BigramLmConfig {
            vocab: 8,
            hidden: 4,
        }
        .init::<NdArray>(&device)
        .unwrap();
        // Zero head ⇒ uniform logits ⇒ loss ln 8 whatever the input.
        m.head.weight = m.head.weight.map(|w| w.zeros_like());
        if let Some(b) = m.head.bias.take() {
            m.head.bias = Some(b.map(|b| b.zeros_like()));
        }
        let tokens = Tensor::<NdArray, 2, Int>::from_data(
            TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]),
            &device,
        );
        let l = f64::from(m.loss(tokens).unwrap().into_scalar());
        assert!((l - 8f64.ln()).abs() < 1e-5, "{l}");
        let one =
            Tensor::<NdArray, 2, Int>::from_data(TensorData::new(vec![1i64, 2], [2, 1]), &device);
        assert!(m.loss(one).is_err());
        assert!(
            BigramLmConfig {
                vocab: 0,
                hidden: 4
            }
            .init::<NdArray>(&device)
            .is_err()
        );
    }
}
