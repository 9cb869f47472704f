//! What a data-parallel step costs on this machine: one process, N CPU peer threads
//! (burn-collective local mode, ndarray), a model of `--params` f32 parameters in 16 equal
//! tensors, AdamW. Prints median step times of the single-device step and of replicated and
//! sharded data-parallel steps with both gradient reductions, and per-peer state bytes.
//!
//! `cargo run --release -p moment-dist --example dp_step -- [--params 4194304] [--peers 2] [--reps 9]`

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use moment_dist::{BurnCollective, DataParallel, GradReduce, ShardPlan};
use moment_optim::{AdamWConfig, MomentOptimizer, ParamTensor};

type B = NdArray<f32>;

fn model(n: usize) -> Vec<ParamTensor<B>> {
    (0..16)
        .map(|i| ParamTensor {
            path: format!("layer{i:02}.weight"),
            shape: vec![n / 16],
            value: Tensor::random(
                [n / 16],
                Distribution::Normal(0.0, 0.5),
                &Default::default(),
            ),
            grad: Some(Tensor::random(
                [n / 16],
                Distribution::Normal(0.0, 1.0),
                &Default::default(),
            )),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut n, mut world, mut reps) = (1usize << 22, 2usize, 9usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--params" => n = v.parse()?,
            "--peers" => world = v.parse()?,
            "--reps" => reps = v.parse()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let chain = || AdamWConfig::default().build();
    // single device
    let mut opt = MomentOptimizer::new(chain()?);
    let mut p = model(n);
    let mut t = Vec::new();
    for i in 0..reps + 2 {
        let t0 = Instant::now();
        opt.step(1e-3, &mut p)?;
        if i >= 2 {
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let total_state = opt.state_memory().total_bytes;
    println!("{n} parameters in 16 tensors, AdamW, {world} peers (threads, ndarray, local mode)\n");
    println!("| step | median ms | state bytes on peer 0 |");
    println!("| --- | ---: | ---: |");
    println!("| single device | {:.2} | {total_state} |", median(t));
    for (label, sharded, reduce) in [
        (
            "replicated, rank-ordered mean",
            false,
            GradReduce::RankOrdered,
        ),
        ("replicated, burn all-reduce", false, GradReduce::AllReduce),
        ("sharded, rank-ordered mean", true, GradReduce::RankOrdered),
        ("sharded, burn all-reduce", true, GradReduce::AllReduce),
    ] {
        let results: Vec<Result<(f64, u64), String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..world)
                .map(|rank| {
                    s.spawn(move || -> Result<(f64, u64), String> {
                        let e = |e: &dyn std::fmt::Display| e.to_string();
                        let comm =
                            BurnCollective::<B>::register_local(rank, world, &Default::default())
                                .map_err(|x| e(&x))?;
                        let opt = MomentOptimizer::new(chain().map_err(|x| e(&x))?);
                        let mut p = model(n);
                        let mut dp = if sharded {
                            let plan = ShardPlan::balanced(
                                p.iter().map(|p| (p.path.as_str(), 4 * p.value.dims()[0])),
                                world,
                            )
                            .map_err(|x| e(&x))?;
                            DataParallel::sharded(opt, comm, plan).map_err(|x| e(&x))?
                        } else {
                            DataParallel::replicated(opt, comm)
                        }
                        .with_grad_reduce(reduce);
                        let grads: Vec<_> = p.iter().map(|p| p.grad.clone()).collect();
                        let mut t = Vec::new();
                        for i in 0..reps + 2 {
                            for (p, g) in p.iter_mut().zip(&grads) {
                                p.grad = g.clone();
                            }
                            let t0 = Instant::now();
                            dp.step(1e-3, &mut p).map_err(|x| e(&x))?;
                            if i >= 2 {
                                t.push(t0.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                        Ok((median(t), dp.state_memory().total_bytes))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("peer panicked".into())))
                .collect()
        });
        let (ms, bytes) = results.into_iter().next().ok_or("no peers")??;
        println!("| {label} | {ms:.2} | {bytes} |");
    }
    Ok(())
}
