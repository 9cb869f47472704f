//! The configuration LLM users copy: Muon for the 2-D hidden weights, AdamW for embeddings and
//! the LM head (decay) and for norm weights (no decay), global gradient clipping at 1.0, a
//! non-finite policy, on the test transformer — 30 steps, then where every parameter went and
//! what each group's state costs.
//!
//! `cargo run --release -p moment-examples --example custom_groups`

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::optim::GradientsParams;
use moment_model::{Corpus, MarkovCorpus, Split, TestModelConfig, TokenBatch};
use moment_optim::{
    AdamWConfig, MomentOptimizer, MuonConfig, NonFinitePolicy, ParamGroup, Selector,
};

type B = Autodiff<NdArray>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let corpus = MarkovCorpus::new(64, 2.0, 0)?;
    let mut model = TestModelConfig::tiny(64).init::<B>(&device)?;

    // Groups, first match wins. Muon's lr is 0.02; AdamW's 3e-3 is a multiplier of that.
    let muon = MuonConfig::default();
    let adamw = |wd: f64| {
        AdamWConfig::default()
            .with_weight_decay(wd)
            .build::<NdArray>()
    };
    let engine = MomentOptimizer::builder()
        .group(ParamGroup::new("norms", Selector::rank_between(0, 1), adamw(0.0)?).lr_mult(0.15))
        .group(
            ParamGroup::new(
                "embed_head",
                Selector::path_contains("embed") | Selector::path_contains("lm_head"),
                adamw(0.1)?,
            )
            .lr_mult(0.15),
        )
        .group(ParamGroup::new("muon", Selector::rank(2), muon.build()?))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    let mut optim = engine.for_module::<_, B>();

    for step in 0..30u64 {
        let b = TokenBatch::from_corpus(&corpus as &dyn Corpus, Split::Train, step, 16, 32)?
            .to_tensors::<B>(&device);
        let loss = model
            .forward(b.inputs, Some(b.targets))?
            .loss
            .ok_or("no loss")?;
        let value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (next, report) = optim.try_step(0.02, model, grads);
        model = next;
        report?;
        if step % 10 == 9 {
            let r = optim.engine().last_report().ok_or("no report")?;
            println!(
                "step {:>2}  loss {value:.4}  grad norm {:.3}{}",
                step + 1,
                r.grad_norm,
                if r.clipped { " (clipped)" } else { "" }
            );
        }
    }

    let engine = optim.engine();
    let mem = engine.state_memory();
    println!(
        "\n{:<40} {:>10} {:>12} {:>10}",
        "parameter", "group", "elements", "state B"
    );
    for p in &mem.params {
        let shape: Vec<usize> = engine
            .state(&p.path)
            .and_then(|s| {
                s.iter()
                    .flat_map(|t| t.tensors.iter())
                    .next()
                    .map(|t| t.shape.clone())
            })
            .unwrap_or_default();
        let group = engine.group_of(&p.path, &shape).unwrap_or("?");
        println!(
            "{:<40} {:>10} {:>12} {:>10}",
            p.path, group, p.elements, p.total_bytes
        );
    }
    println!(
        "\n{} parameters, optimizer state {} bytes ({:.2} B/param)",
        model.num_params(),
        mem.total_bytes,
        mem.bytes_per_param()
    );
    Ok(())
}
