//! The code blocks of README.md and docs/monitor.md, compiled and run: each block is one
//! `// snippet` region below, word for word (`examples/tests/doc_snippets.rs` checks that
//! every Rust block in the docs is one), around a few steps of the tiny test model.
//!
//! `cargo run --release -p moment-examples --example readme`
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use burn::backend::{Autodiff, NdArray};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use moment_model::{TestModelConfig, TestModelForCausalLM};
use moment_optim::SophiaConfig;

type Inner = NdArray<f32>;
type MyAutodiffBackend = Autodiff<Inner>;
type MyModel<B> = TestModelForCausalLM<B>;

type Error = Box<dyn std::error::Error>;

fn model() -> Result<MyModel<MyAutodiffBackend>, Error> {
    let config = TestModelConfig {
        hidden: 32,
        intermediate: 64,
        heads: 2,
        layers: 1,
        max_seq_len: 16,
        ..TestModelConfig::tiny(64)
    };
    Ok(config.init(&Default::default())?)
}

/// A batch of 2 sequences of 8 tokens and the next tokens as targets.
fn batch(
    step: u64,
) -> (
    Tensor<MyAutodiffBackend, 2, Int>,
    Tensor<MyAutodiffBackend, 2, Int>,
) {
    let ids: Vec<i64> = (0..18).map(|i| (i * 7 + step as i64 * 3) % 64).collect();
    let device = Default::default();
    let take = |from: usize| {
        let v: Vec<i64> = [&ids[from..from + 8], &ids[from + 9..from + 17]].concat();
        Tensor::from_data(TensorData::new(v, [2, 8]), &device)
    };
    (take(0), take(1))
}

fn loss_of(
    model: &MyModel<MyAutodiffBackend>,
    step: u64,
) -> Result<Tensor<MyAutodiffBackend, 1>, Error> {
    let (tokens, targets) = batch(step);
    let out = model.forward(tokens, Some(targets))?;
    out.loss.ok_or_else(|| "no loss".into())
}

/// README: "Swap one line" (burn's `init::<B, M>()` shape).
#[rustfmt::skip]
fn swap_one_line() -> Result<(), Error> {
    let mut model = model()?;
    // snippet
    // burn-optim: let mut optim = burn::optim::AdamWConfig::new().init::<MyAutodiffBackend, MyModel<MyAutodiffBackend>>();
    let mut optim = moment_optim::AdamWConfig::new().init::<MyAutodiffBackend, MyModel<MyAutodiffBackend>>()?;
    // end snippet
    for step in 0..2 {
        let loss = loss_of(&model, step)?;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    if optim.engine().last_report().is_none() {
        return Err("swap_one_line: no step was taken".into());
    }
    Ok(())
}

/// README: "Drop it into a Burn training loop".
#[rustfmt::skip]
fn drop_in() -> Result<(), Error> {
    let mut model = model()?;
    let lr = 1e-3;
    // snippet
    use moment_optim::{AdamWConfig, MomentOptimizer, ParamGroup, Selector};

    let adamw = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
    let mut optim = MomentOptimizer::builder()
        .group(ParamGroup::new("no_decay", Selector::rank_between(0, 1), adamw.with_weight_decay(0.0).build()?))
        .group(ParamGroup::new("decay", Selector::all(), adamw.build()?))
        .clip_grad_norm(1.0)
        .build()?
        .for_module::<MyModel<MyAutodiffBackend>, MyAutodiffBackend>();
    // end snippet
    for step in 0..2 {
        let loss = loss_of(&model, step)?;
        // snippet
        // burn::optim::Optimizer — works in your loop and in burn-train's Learner:
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        // end snippet
        let loss = loss_of(&model, step)?;
        // snippet
        // or, to get errors and the step report (pre-clip norm, non-finite counts) as a Result:
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (next, report) = optim.try_step(lr, model, grads);
        model = next;
        let report = report?;
        // end snippet
        println!("drop-in step {step}: pre-clip gradient norm {:.4}", report.grad_norm);
    }
    Ok(())
}

/// README: "The fastest CPU step".
#[rustfmt::skip]
fn fastest_step() -> Result<(), Error> {
    use moment_optim::{AdamWConfig, MomentOptimizer, ParamGroup, Selector};
    // snippet
    use moment_optim::{GradientScan, NonFinitePolicy};
    let optim = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::all(), AdamWConfig::default().build()?))
        .non_finite(NonFinitePolicy::Propagate)
        .gradient_scan(GradientScan::InPass)   // refused with clipping or another policy
        .build()?;
    // end snippet
    let optim: MomentOptimizer<Inner> = optim;
    println!("fastest step: {} group(s)", optim.groups().len());
    Ok(())
}

/// README: Sophia's curvature.
#[rustfmt::skip]
fn sophia() -> Result<(), Error> {
    let mut model = model()?;
    let mut optim = moment_optim::MomentOptimizer::new(SophiaConfig::g().build()?)
        .for_module::<MyModel<MyAutodiffBackend>, MyAutodiffBackend>();
    let seed = 7;
    // snippet
    let mut gnb = moment_optim::curvature::GnbEstimator::new(10, seed)?;   // every 10 steps
    // end snippet
    for step in 0..3u64 {
        let (tokens, _) = batch(step);
        // snippet
        if gnb.due(step) {                  // `step`: optimizer steps done so far
            let logits = model.forward(tokens, None)?.logits;            // [batch, seq, vocab]
            let [b, s, v] = logits.dims();
            let loss = gnb.sampled_loss(logits.reshape([b * s, v]))?;    // labels ~ softmax(logits)
            optim.update_curvature(&model, GradientsParams::from_grads(loss.backward(), &model))?;
        }
        // end snippet
        let loss = loss_of(&model, step)?;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    println!("sophia: 3 steps, curvature at step 0");
    Ok(())
}

/// docs/monitor.md: the monitor around the engine, writing into a scratch directory.
#[rustfmt::skip]
fn monitor() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("moment-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(&dir)?;
    let mut model = model()?;
    let mut optim = moment_optim::MomentOptimizer::new(moment_optim::AdamWConfig::default().build()?)
        .for_module::<MyModel<MyAutodiffBackend>, MyAutodiffBackend>();
    let (steps, tokens, loss_floor) = (3u64, 16u64, 1.0);
    // snippet
    use moment_monitor::{CsvSink, JsonlSink, MonitorConfig, StepInfo, TensorBoardSink, replot};

    let mut monitor = MonitorConfig::default()
        .with_interval(10)                 // per-parameter statistics every 10th step (and step 1)
        .build()?;
    monitor
        .add_sink(JsonlSink::create("runs/a/metrics.jsonl")?)
        .add_sink(CsvSink::create("runs/a/metrics.csv")?)
        .add_sink(TensorBoardSink::create("runs/a/tensorboard")?);
    let monitor = monitor.shared();        // Arc<Mutex<Monitor>>
    optim.engine_mut().set_observer(monitor.clone());

    for step in 0..steps {
        // forward, backward, optimizer step …
        let loss_tensor = loss_of(&model, step)?;
        let loss = f64::from(loss_tensor.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss_tensor.backward(), &model);
        model = optim.step(1e-3, model, grads);
        monitor.lock().unwrap().finish_step(
            StepInfo::new().loss(loss).tokens(tokens).memory(optim.engine().state_memory()),
        )?;
    }
    monitor.lock().unwrap().flush()?;
    replot("runs/a", Some(loss_floor))?;  // dashboard.png/.svg, layers.png, report.md, summary.json
    // end snippet
    println!("monitor: wrote {}", dir.join("runs/a").display());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Result<(), Error> {
    swap_one_line()?;
    drop_in()?;
    fastest_step()?;
    sophia()?;
    monitor()?;
    Ok(())
}
