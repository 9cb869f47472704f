//! burn-train's `SupervisedTraining` training the test transformer with a moment optimizer,
//! and the monitor's numbers (gradient norm, update/weight ratio, clip rate, optimizer-state
//! memory) shown as burn-train metrics next to its own loss and accuracy.
//!
//! `cargo run --release -p moment-examples --example burn_train`
//!
//! Writes burn-train's artifacts (logs, checkpoints, metric files) to
//! `runs/burn-train/` and the monitor's JSONL there too.

use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoaderBuilder, Dataset};
use burn::tensor::backend::Backend;
use burn_train::metric::{AccuracyMetric, LossMetric};
use burn_train::{Learner, SupervisedTraining};
use moment_model::{CausalLmBatch, Corpus, MarkovCorpus, Split, TestModelConfig, TokenBatch};
use moment_monitor::{JsonlSink, MonitorConfig, MonitorMetric, MonitorQuantity};
use moment_optim::{AdamWConfig, MomentOptimizer, NonFinitePolicy, ParamGroup, Selector};

type B = Autodiff<NdArray>;

const SEQ: usize = 32;

/// Sequences of a corpus split, one item per sequence of `SEQ + 1` tokens.
struct Sequences {
    corpus: Arc<MarkovCorpus>,
    split: Split,
    len: usize,
}

impl Dataset<Vec<usize>> for Sequences {
    fn get(&self, index: usize) -> Option<Vec<usize>> {
        (index < self.len).then(|| self.corpus.sequence(self.split, index as u64, SEQ + 1))
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Items → a `[batch, SEQ]` batch of inputs and next-token targets.
#[derive(Clone)]
struct LmBatcher;

impl<Bk: Backend> Batcher<Bk, Vec<usize>, CausalLmBatch<Bk>> for LmBatcher {
    fn batch(&self, items: Vec<Vec<usize>>, device: &Bk::Device) -> CausalLmBatch<Bk> {
        let batch = TokenBatch {
            batch: items.len(),
            seq_len: SEQ,
            inputs: items
                .iter()
                .flat_map(|s| s[..SEQ].iter().map(|&t| t as i64))
                .collect(),
            targets: items
                .iter()
                .flat_map(|s| s[1..].iter().map(|&t| t as i64))
                .collect(),
        };
        batch.to_tensors(device)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "runs/burn-train";
    let device = Default::default();
    let corpus = Arc::new(MarkovCorpus::new(64, 2.0, 0)?);
    let model = TestModelConfig::tiny(64).init::<B>(&device)?;

    // moment's AdamW with the usual grouping, clipping and the monitor attached.
    let adamw = |wd: f64| {
        AdamWConfig::default()
            .with_weight_decay(wd)
            .build::<NdArray>()
    };
    let mut engine = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "no_decay",
            Selector::rank_between(0, 1),
            adamw(0.0)?,
        ))
        .group(ParamGroup::new("decay", Selector::all(), adamw(0.1)?))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    let mut monitor = MonitorConfig::default().with_interval(10).build()?;
    monitor.add_sink(JsonlSink::create(format!("{dir}/monitor.jsonl"))?);
    let monitor = monitor.shared();
    engine.set_observer(monitor.clone());
    let optim = engine.for_module::<_, B>();

    let train = DataLoaderBuilder::new(LmBatcher)
        .batch_size(16)
        .build(Sequences {
            corpus: corpus.clone(),
            split: Split::Train,
            len: 16 * 150,
        });
    let valid = DataLoaderBuilder::new(LmBatcher)
        .batch_size(16)
        .build(Sequences {
            corpus,
            split: Split::Valid,
            len: 16 * 4,
        });

    let metric = |q| MonitorMetric::new(monitor.clone(), q);
    let result = SupervisedTraining::new(dir, train, valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(AccuracyMetric::new())
        .metric_train_numeric(metric(MonitorQuantity::GradNorm))
        .metric_train_numeric(metric(MonitorQuantity::UpdateToWeight))
        .metric_train_numeric(metric(MonitorQuantity::ClipRate))
        .num_epochs(1)
        .summary()
        .launch(Learner::new(model, optim, 3e-3));
    monitor
        .lock()
        .map_err(|_| "monitor lock poisoned")?
        .flush()?;
    drop(result);
    let m = monitor.lock().map_err(|_| "monitor lock poisoned")?;
    println!(
        "monitor: {} steps recorded, last gradient norm {:.3}, {} spikes; records in {dir}/monitor.jsonl",
        m.records().len(),
        m.latest().map_or(f64::NAN, |r| r.grad_norm),
        m.spikes().len()
    );
    Ok(())
}
