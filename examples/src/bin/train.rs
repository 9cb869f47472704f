//! The README's main command (for now): train a small next-token model with moment's AdamW on
//! a synthetic Markov corpus whose loss floor is known, and print the loss going down.
//!
//! `cargo run -p moment-examples --bin train [-- --steps N --seed S --jsonl PATH]`

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use moment_model::{BigramLmConfig, MarkovCorpus, SplitMix64, sample_batch};
use moment_monitor::NormMonitor;
use moment_optim::{AdamWConfig, MomentOptimizer, NonFinitePolicy, ParamGroup, Selector};

type B = Autodiff<NdArray>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut steps = 300usize;
    let mut seed = 0u64;
    let mut jsonl: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().ok_or("--steps needs a value")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a value")?.parse()?,
            "--jsonl" => jsonl = Some(args.next().ok_or("--jsonl needs a path")?),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }

    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let (vocab, batch, seq, lr) = (32, 16, 65, 1e-2);
    let corpus = MarkovCorpus::new(vocab, 2.0, seed)?;
    let floor = corpus.entropy_rate();
    let mut model = BigramLmConfig { vocab, hidden: 64 }.init::<B>(&device)?;

    // AdamW with the usual LLM grouping: no decay on vectors (biases), decay elsewhere.
    let adamw = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let mut engine = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "no_decay",
            Selector::rank_between(0, 1),
            adamw.with_weight_decay(0.0).build()?,
        ))
        .group(ParamGroup::new("decay", Selector::all(), adamw.build()?))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    let monitor = Arc::new(Mutex::new(NormMonitor::new(50)));
    engine.set_observer(monitor.clone());
    let mut optim = engine.for_module::<_, B>();

    println!(
        "training a {}-token model ({} params) with moment AdamW, lr {lr}, {steps} steps",
        vocab,
        burn::module::Module::num_params(&model)
    );
    println!("loss floor (entropy rate of the corpus): {floor:.4} nats/token");
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    // A fixed held-out set, evaluated without autodiff: the smooth curve to read.
    let mut val_rng = SplitMix64::new(seed ^ 0xda7a);
    let val = sample_batch::<NdArray>(&corpus, 64, seq, &mut val_rng, &device);
    let val_loss = |m: &moment_model::BigramLm<B>| {
        m.valid()
            .loss(val.clone())
            .map(|l| f64::from(l.into_scalar()))
    };
    let val0 = val_loss(&model)?;
    let start = Instant::now();
    let mut last = f64::NAN;
    let mut last_val = val0;
    for step in 1..=steps {
        let tokens = sample_batch::<B>(&corpus, batch, seq, &mut rng, &device);
        let loss = model.loss(tokens)?;
        let value = f64::from(loss.clone().into_scalar());
        last = value;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        if let Some(e) = optim.take_error() {
            return Err(e.into());
        }
        if step == 1 || step % 25 == 0 {
            let r = optim.engine().last_report().cloned();
            let v = val_loss(&model)?;
            last_val = v;
            println!(
                "step {step:>4}  train {value:.4}  val {v:.4}  gap to floor {:+.4}  grad_norm {:.3}{}",
                v - floor,
                r.as_ref().map_or(f64::NAN, |r| r.grad_norm),
                if r.is_some_and(|r| r.clipped) {
                    " (clipped)"
                } else {
                    ""
                }
            );
        }
    }
    let mem = optim.engine().state_memory();
    println!(
        "done in {:.1}s: val loss {val0:.4} -> {last_val:.4} (floor {floor:.4}, last train batch {last:.4}); optimizer state {} bytes ({:.2} B/param: {:?})",
        start.elapsed().as_secs_f64(),
        mem.total_bytes,
        mem.bytes_per_param(),
        mem.by_kind
    );
    if let Some(path) = jsonl {
        let file = std::fs::File::create(&path)?;
        monitor
            .lock()
            .map_err(|_| "monitor lock poisoned")?
            .write_jsonl(std::io::BufWriter::new(file))?;
        println!("monitor records written to {path}");
    }
    Ok(())
}
