//! The code blocks of docs/distributed.md, compiled and run on two CPU peers (threads, local
//! mode): each block is one `// snippet` region below, word for word
//! (`examples/tests/doc_snippets.rs` checks it).
//!
//! `cargo run -p moment-dist --example doc_snippets`

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use moment_optim::{AdamWConfig, MomentOptimizer, ParamTensor};

type Error = Box<dyn std::error::Error + Send + Sync>;
type AB = Autodiff<NdArray>;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
}

fn params() -> Vec<ParamTensor<NdArray>> {
    (0..4)
        .map(|i| ParamTensor {
            path: format!("layer{i}.weight"),
            shape: vec![64],
            value: Tensor::zeros([64], &Default::default()),
            grad: None,
        })
        .collect()
}

fn loss_on_my_micro_batch(model: &Net<AB>) -> Tensor<AB, 1> {
    let x = Tensor::<AB, 2>::random([4, 3], Distribution::Normal(0.0, 1.0), &Default::default());
    model.a.forward(x).powf_scalar(2.0).mean()
}

/// The flat-tensor API, on peer `rank` of `world`.
#[rustfmt::skip]
fn flat(rank: usize, world: usize) -> Result<(), Error> {
    let device = Default::default();
    let mut params = params();
    let (lr, steps) = (1e-3, 3);
    // snippet
    use moment_dist::{BurnCollective, DataParallel, ShardPlan};
    // on peer `rank` of `world`, in its own thread:
    let comm = BurnCollective::<NdArray>::register_local(rank, world, &device)?;
    let plan = ShardPlan::balanced(params.iter().map(|p| (p.path.as_str(), 4 * p.value.dims()[0])), world)?;
    let mut dp = DataParallel::sharded(MomentOptimizer::new(AdamWConfig::default().build()?), comm, plan)?;
    for _ in 0..steps {
        // … forward/backward on this peer's micro-batch, fill params[i].grad …
        for p in params.iter_mut() {
            p.grad = Some(Tensor::ones([64], &device));
        }
        dp.step(lr, &mut params)?;   // every peer ends with the same parameters
    }
    // end snippet
    Ok(())
}

/// The module API, on peer `rank` of `world`.
#[rustfmt::skip]
fn module(rank: usize, world: usize) -> Result<(), Error> {
    use moment_dist::{BurnCollective, DataParallel};
    let comm = BurnCollective::<NdArray>::register_local(rank, world, &Default::default())?;
    let mut dp = DataParallel::replicated(MomentOptimizer::new(AdamWConfig::default().build()?), comm);
    let model = Net::<AB> { a: LinearConfig::new(3, 2).init(&Default::default()) };
    let (lr, steps) = (1e-3, 3);
    // snippet
    let (mut model, r) = dp.sync_module(model);   // once: every peer gets rank 0's values
    r?;
    for _ in 0..steps {
        let grads = GradientsParams::from_grads(loss_on_my_micro_batch(&model).backward(), &model);
        let (next, r) = dp.step_module(lr, model, grads);   // on error: the module unchanged
        model = next;
        r?;
    }
    // end snippet
    Ok(())
}

/// Run `peer` on `world` threads; the first error, if any.
fn peers(world: usize, peer: fn(usize, usize) -> Result<(), Error>) -> Result<(), Error> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| s.spawn(move || peer(rank, world)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a peer panicked".into())))
            .collect::<Result<Vec<()>, Error>>()
    })?;
    Ok(())
}

fn main() -> Result<(), Error> {
    // burn-collective keeps one server per backend type per process: one scenario at a time.
    peers(2, flat)?;
    peers(2, module)?;
    println!("docs/distributed.md: both snippets ran on 2 peers");
    Ok(())
}
