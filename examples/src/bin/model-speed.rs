//! Forward + backward throughput of the test transformer presets on the CPU (ndarray).
//!
//! `cargo run --release -p moment-examples --bin model-speed [-- --batch B --seq S --reps N]`
//!
//! Prints, per preset (`tiny`, `small`, vocab 256): parameters, median forward and backward
//! time over `reps` timed steps after two warm-up steps, and tokens/s for forward+backward.
//! No optimizer step is included (that is `cargo xtask bench`'s job).

use std::process::ExitCode;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use moment_model::{Corpus, MarkovConfig, MarkovCorpus, Split, TestModelConfig, TokenBatch};

type B = Autodiff<NdArray>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("model-speed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut batch, mut seq, mut reps) = (8usize, 128usize, 5usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> Result<usize, Box<dyn std::error::Error>> {
            Ok(args.next().ok_or(format!("{a} needs a value"))?.parse()?)
        };
        match a.as_str() {
            "--batch" => batch = value()?,
            "--seq" => seq = value()?,
            "--reps" => reps = value()?.max(1),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let vocab = 256;
    let corpus = MarkovCorpus::with_config(&MarkovConfig {
        vocab,
        ..MarkovConfig::default()
    })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "CPU (ndarray), {threads} threads, batch {batch} × seq {seq} = {} tokens/step",
        batch * seq
    );
    println!("| preset | params | forward ms | backward ms | fwd+bwd tokens/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, config) in [
        ("tiny", TestModelConfig::tiny(vocab)),
        ("small", TestModelConfig::small(vocab)),
    ] {
        let config = TestModelConfig {
            max_seq_len: config.max_seq_len.max(seq),
            ..config
        };
        let device = Default::default();
        let model = config.init::<B>(&device)?;
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for step in 0..reps + 2 {
            let b = TokenBatch::from_corpus(
                &corpus as &dyn Corpus,
                Split::Train,
                step as u64,
                batch,
                seq,
            )?
            .to_tensors::<B>(&device);
            let t0 = Instant::now();
            let loss = model
                .forward(b.inputs, Some(b.targets))?
                .loss
                .ok_or("no loss")?;
            let _ = loss.clone().into_scalar();
            let t1 = Instant::now();
            let grads = loss.backward();
            drop(grads);
            let t2 = Instant::now();
            if step >= 2 {
                fwd.push((t1 - t0).as_secs_f64());
                bwd.push((t2 - t1).as_secs_f64());
            }
        }
        let (f, b) = (median(fwd), median(bwd));
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.0} |",
            model.num_params(),
            f * 1e3,
            b * 1e3,
            (batch * seq) as f64 / (f + b)
        );
    }
    Ok(())
}
