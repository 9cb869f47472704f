//! burn-train integration (feature `train`, on by default): [`TestModelForCausalLM`] is a
//! `TrainStep` / `InferenceStep` over [`CausalLmBatch`]es, with burn-train's
//! `ClassificationOutput` (loss, logits `[batch·seq, vocab]`, targets `[batch·seq]`), so
//! burn-train's `Learner` and its loss/accuracy metrics work unchanged.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::CausalLmBatch;
use crate::corpus::ModelError;
use crate::transformer::TestModelForCausalLM;

impl<B: Backend> TestModelForCausalLM<B> {
    /// Forward with targets, shaped as burn-train's `ClassificationOutput`.
    pub fn classification(
        &self,
        batch: CausalLmBatch<B>,
    ) -> Result<ClassificationOutput<B>, ModelError> {
        let [b, s] = batch.targets.dims();
        let out = self.forward(batch.inputs, Some(batch.targets.clone()))?;
        let loss = out.loss.ok_or_else(|| ModelError::Input {
            reason: "no loss without targets".into(),
        })?;
        Ok(ClassificationOutput {
            loss,
            output: out.logits.reshape([b * s, self.vocab]),
            targets: batch.targets.reshape([b * s]),
        })
    }
}

impl<B: AutodiffBackend> TrainStep for TestModelForCausalLM<B> {
    type Input = CausalLmBatch<B>;
    type Output = ClassificationOutput<B>;

    /// burn-train's trait cannot return an error: a malformed batch panics with the
    /// [`ModelError`] message (validate batches with [`TestModelForCausalLM::classification`]).
    #[allow(
        clippy::panic,
        reason = "burn-train's TrainStep cannot return an error"
    )]
    fn step(&self, item: CausalLmBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let out = self
            .classification(item)
            .unwrap_or_else(|e| panic!("TestModelForCausalLM train step: {e}"));
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for TestModelForCausalLM<B> {
    type Input = CausalLmBatch<B>;
    type Output = ClassificationOutput<B>;

    /// See the note on the train step about malformed batches.
    #[allow(
        clippy::panic,
        reason = "burn-train's InferenceStep cannot return an error"
    )]
    fn step(&self, item: CausalLmBatch<B>) -> ClassificationOutput<B> {
        self.classification(item)
            .unwrap_or_else(|e| panic!("TestModelForCausalLM inference step: {e}"))
    }
}
