//! `DataParallel::step_module`: a Burn module trained data-parallel (2 CPU peers, local mode)
//! equals the same module trained on the whole batch by `ModuleOptimizer`, replicated or
//! sharded, and every peer ends with the same module.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::Watchdog;
use moment_dist::{BurnCollective, DataParallel, ShardPlan};
use moment_optim::{AdamWConfig, MomentOptimizer};

type AB = Autodiff<NdArray>;

/// burn-collective keeps one server per backend type per process: one scenario at a time.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
}

fn net() -> Net<AB> {
    let device = Default::default();
    AB::seed(&device, 3);
    Net {
        a: LinearConfig::new(3, 16).init(&device),
        b: LinearConfig::new(16, 2).init(&device),
    }
}

fn batch(rows: std::ops::Range<usize>, step: usize) -> (Tensor<AB, 2>, Tensor<AB, 2>) {
    let x: Vec<f32> = rows
        .clone()
        .flat_map(|r| (0..3).map(move |c| ((r * 7 + c * 3 + step) % 11) as f32 * 0.2 - 1.0))
        .collect();
    let y: Vec<f32> = rows
        .clone()
        .flat_map(|r| (0..2).map(move |c| ((r * 5 + c + step) % 7) as f32 * 0.3 - 0.9))
        .collect();
    let n = rows.len();
    let device = Default::default();
    (
        Tensor::from_data(TensorData::new(x, [n, 3]), &device),
        Tensor::from_data(TensorData::new(y, [n, 2]), &device),
    )
}

fn grads(model: &Net<AB>, rows: std::ops::Range<usize>, step: usize) -> GradientsParams {
    let (x, y) = batch(rows, step);
    let out = model.b.forward(model.a.forward(x).tanh());
    let loss = (out - y).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

fn weights(m: &Net<AB>) -> Vec<f32> {
    let mut v: Vec<f32> = m.a.weight.val().into_data().to_vec().unwrap();
    v.extend(m.b.weight.val().into_data().to_vec::<f32>().unwrap());
    v.extend(
        m.b.bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
    );
    v
}

#[test]
fn a_module_trained_data_parallel_equals_the_whole_batch_run() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::new(300);
    let steps = 5;
    let chain = AdamWConfig::default().build().unwrap();
    let mut single = MomentOptimizer::new(chain.clone()).for_module::<Net<AB>, AB>();
    // One initial model, materialised (burn initialises parameters lazily, per clone), cloned
    // for every peer: same values, same paths.
    let m0 = net();
    let _ = moment_optim::module_values::<Net<AB>, AB>(&m0);
    let mut m = m0.clone();
    let start = weights(&m);
    for s in 0..steps {
        let g = grads(&m, 0..8, s);
        m = single.step(1e-2, m, g);
        assert!(single.take_error().is_none());
    }
    let whole = weights(&m);
    assert!(
        whole.iter().zip(&start).any(|(a, b)| (a - b).abs() > 1e-3),
        "the run moves"
    );
    for sharded in [false, true] {
        let out: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|rank| {
                    let chain = chain.clone();
                    let m0 = m0.clone();
                    s.spawn(move || {
                        let comm =
                            BurnCollective::<NdArray>::register_local(rank, 2, &Default::default())
                                .unwrap();
                        let mut m = m0;
                        let opt = MomentOptimizer::new(chain);
                        let mut dp = if sharded {
                            let plan = ShardPlan::balanced(
                                [
                                    ("a.weight", 192),
                                    ("a.bias", 64),
                                    ("b.weight", 128),
                                    ("b.bias", 8),
                                ],
                                2,
                            )
                            .unwrap();
                            DataParallel::sharded(opt, comm, plan).unwrap()
                        } else {
                            DataParallel::replicated(opt, comm)
                        };
                        let (synced, r) = dp.sync_module(m);
                        r.unwrap();
                        m = synced;
                        for step in 0..steps {
                            let g = grads(&m, rank * 4..rank * 4 + 4, step);
                            let (next, r) = dp.step_module(1e-2, m, g);
                            r.unwrap();
                            m = next;
                        }
                        weights(&m)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(out[0] == out[1], "sharded={sharded}: peers differ");
        let d = out[0]
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "sharded={sharded}: {d} from the whole-batch run");
    }
}

/// Peers whose models differ (here: each initialises its own, lazily) are refused at the first
/// step on every peer; after `sync_module` they train in lockstep.
#[test]
fn unsynced_replicas_are_refused_and_sync_module_fixes_them() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::new(300);
    let out: Vec<(String, Vec<f32>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                s.spawn(move || {
                    let comm =
                        BurnCollective::<NdArray>::register_local(rank, 2, &Default::default())
                            .unwrap();
                    let device = Default::default();
                    // different values on purpose
                    AB::seed(&device, 10 + rank as u64);
                    let m = Net::<AB> {
                        a: LinearConfig::new(3, 16).init(&device),
                        b: LinearConfig::new(16, 2).init(&device),
                    };
                    let _ = moment_optim::module_values::<Net<AB>, AB>(&m);
                    let opt = MomentOptimizer::new(AdamWConfig::default().build().unwrap());
                    let mut dp = DataParallel::replicated(opt, comm);
                    let g = grads(&m, rank * 4..rank * 4 + 4, 0);
                    let before = weights(&m);
                    let (m, r) = dp.step_module(1e-2, m, g);
                    let err = r.unwrap_err().to_string();
                    assert_eq!(
                        weights(&m),
                        before,
                        "peer {rank}: refused step changed the module"
                    );
                    let (mut m, r) = dp.sync_module(m);
                    r.unwrap();
                    for step in 0..3 {
                        let g = grads(&m, rank * 4..rank * 4 + 4, step);
                        let (next, r) = dp.step_module(1e-2, m, g);
                        r.unwrap();
                        m = next;
                    }
                    (err, weights(&m))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(out[1].0.contains("differ from peer 0"), "{}", out[1].0);
    assert!(out[0].0.contains("refused the step"), "{}", out[0].0);
    assert!(out[0].1 == out[1].1, "peers differ after sync_module");
}
