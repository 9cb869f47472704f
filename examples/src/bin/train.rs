//! The README's main command (for now): train a small next-token model with a moment optimizer
//! on a synthetic Markov corpus whose loss floor is known, and print the loss going down and
//! the optimizer-state memory.
//!
//! `cargo run -p moment-examples --bin train [-- --optimizer adamw|adamw8bit|adafactor
//!  --hidden H --steps N --seed S --jsonl PATH]`
//!
//! Every optimizer uses the usual LLM grouping (no decay on vectors) and lr 1e-2; Adafactor is
//! configured as HF `Trainer(optim="adafactor")` does (`scale_parameter=False,
//! relative_step=False`, the given lr).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use moment_model::{BigramLmConfig, MarkovCorpus, SplitMix64, sample_batch};
use moment_monitor::NormMonitor;
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, Chain, MomentOptimizer, NonFinitePolicy,
    OptimError, ParamGroup, Selector,
};

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
    let mut optimizer = "adamw".to_string();
    let mut hidden = 64usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().ok_or("--steps needs a value")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a value")?.parse()?,
            "--jsonl" => jsonl = Some(args.next().ok_or("--jsonl needs a path")?),
            "--optimizer" => optimizer = args.next().ok_or("--optimizer needs a name")?,
            "--hidden" => hidden = args.next().ok_or("--hidden needs a value")?.parse()?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }

    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let (vocab, batch, seq, lr) = (32, 16, 65, 1e-2);
    let corpus = MarkovCorpus::new(vocab, 2.0, seed)?;
    let floor = corpus.entropy_rate();
    let mut model = BigramLmConfig { vocab, hidden }.init::<B>(&device)?;

    // The usual LLM grouping: no decay on vectors (biases), decay elsewhere.
    let (no_decay, decay) = chains(&optimizer, 0.1)?;
    let mut engine = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "no_decay",
            Selector::rank_between(0, 1),
            no_decay,
        ))
        .group(ParamGroup::new("decay", Selector::all(), decay))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    let monitor = Arc::new(Mutex::new(NormMonitor::new(50)));
    engine.set_observer(monitor.clone());
    let mut optim = engine.for_module::<_, B>();

    println!(
        "training a {}-token model ({} params) with moment {optimizer}, lr {lr}, {steps} steps",
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

/// (no-decay chain, decay chain) for `name`.
fn chains(
    name: &str,
    wd: f64,
) -> Result<(Chain<NdArray>, Chain<NdArray>), Box<dyn std::error::Error>> {
    let pair = |f: &dyn Fn(f64) -> Result<Chain<NdArray>, OptimError>| -> Result<_, OptimError> {
        Ok((f(0.0)?, f(wd)?))
    };
    Ok(match name {
        "adamw" => pair(&|wd| AdamWConfig::default().with_weight_decay(wd).build())?,
        "adamw8bit" => pair(&|wd| Adam8bitConfig::adamw().with_weight_decay(wd).build())?,
        "adafactor" => pair(&|wd| {
            AdafactorConfig {
                scale_parameter: false,
                relative_step: false,
                weight_decay: wd,
                ..AdafactorConfig::transformers()
            }
            .build()
        })?,
        other => {
            return Err(
                format!("unknown optimizer `{other}` (adamw, adamw8bit, adafactor)").into(),
            );
        }
    })
}
