//! Data parallelism and sharded state over burn-collective's local mode (one thread per peer,
//! CPU backend): a run on a batch split N ways equals the single-device run on the whole batch,
//! sharded state equals replicated state bit for bit with ~1/N of the state bytes per peer, a
//! failure on one peer changes nothing anywhere, and sharded checkpoints resume exactly.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;
use common::{Watchdog, flat, noise, values};
use std::sync::Mutex;

use burn::backend::NdArray;
use moment_dist::{BurnCollective, DataParallel, DistError, GradReduce, ShardPlan};
use moment_optim::{
    Adam8bitConfig, AdamWConfig, Chain, MomentOptimizer, OptimError, ParamTensor, ProdigyConfig,
};

type B = NdArray<f32>;

/// burn-collective keeps one server per backend type per process: one scenario at a time.
static LOCK: Mutex<()> = Mutex::new(());

const BATCH: usize = 8;

/// Parameters of a small model: (path, shape). The four matrices are at 8-bit Adam's
/// minimum size, so they get quantized state; like a transformer's layers, no tensor dominates
/// (whole tensors are sharded).
const PARAMS: [(&str, &[usize]); 7] = [
    ("emb.weight", &[256, 16]),
    ("l1.weight", &[16, 256]),
    ("l1.bias", &[256]),
    ("l2.weight", &[256, 16]),
    ("l2.bias", &[16]),
    ("head.weight", &[16, 256]),
    ("norm.gamma", &[16]),
];

fn model() -> Vec<ParamTensor<B>> {
    PARAMS
        .iter()
        .enumerate()
        .map(|(i, (path, shape))| ParamTensor {
            path: path.to_string(),
            shape: shape.to_vec(),
            value: flat(&noise(100 + i as u64, shape.iter().product())),
            grad: None,
        })
        .collect()
}

/// Example `e`'s loss is `s_e/2 · ‖θ − t_e‖²` per tensor: its gradient `s_e (θ − t_e)`
/// depends on the parameters, so the trajectory matters. The gradient of a set of examples
/// is their mean, as a data loader's mean loss gives.
fn set_grads(params: &mut [ParamTensor<B>], step: usize, examples: std::ops::Range<usize>) {
    let count = examples.len() as f32;
    for (i, p) in params.iter_mut().enumerate() {
        let theta = values(&p.value);
        let mut g = vec![0.0f32; theta.len()];
        for e in examples.clone() {
            let seed = (step * 1000 + e * 10 + i) as u64;
            let target = noise(seed, theta.len());
            let s = 0.5 + (e % 3) as f32 * 0.25;
            for ((g, &th), &t) in g.iter_mut().zip(&theta).zip(&target) {
                *g += s * (th - t);
            }
        }
        for g in g.iter_mut() {
            *g /= count;
        }
        p.grad = Some(flat(&g));
    }
}

fn plan(world: usize) -> ShardPlan {
    ShardPlan::balanced(
        PARAMS
            .iter()
            .map(|(p, s)| (*p, 4 * s.iter().product::<usize>())),
        world,
    )
    .unwrap()
}

/// Run `f(rank)` on `world` peer threads (each registered), return their results by rank.
fn peers<T: Send>(world: usize, f: impl Fn(usize, BurnCollective<B>) -> T + Sync) -> Vec<T> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::new(300);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let f = &f;
                s.spawn(move || {
                    let comm =
                        BurnCollective::<B>::register_local(rank, world, &Default::default())
                            .unwrap();
                    f(rank, comm)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn single(chain: &Chain<B>, steps: usize) -> Vec<Vec<f32>> {
    let mut opt = MomentOptimizer::new(chain.clone());
    let mut p = model();
    for step in 0..steps {
        set_grads(&mut p, step, 0..BATCH);
        opt.step(1e-2, &mut p).unwrap();
    }
    p.iter().map(|p| values(&p.value)).collect()
}

/// Each peer's final parameters and state bytes after `steps` data-parallel steps.
fn parallel(
    chain: &Chain<B>,
    world: usize,
    sharded: bool,
    steps: usize,
) -> Vec<(Vec<Vec<f32>>, u64)> {
    peers(world, |rank, comm| {
        let opt = MomentOptimizer::new(chain.clone());
        let mut dp = if sharded {
            DataParallel::sharded(opt, comm, plan(world)).unwrap()
        } else {
            DataParallel::replicated(opt, comm)
        };
        let mut p = model();
        let per = BATCH / world;
        for step in 0..steps {
            set_grads(&mut p, step, rank * per..(rank + 1) * per);
            dp.step(1e-2, &mut p).unwrap();
        }
        (
            p.iter().map(|p| values(&p.value)).collect(),
            dp.state_memory().total_bytes,
        )
    })
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn chains() -> Vec<(&'static str, Chain<B>, f32)> {
    // Tolerances of the families' reference cases (docs/golden.md): the split batch changes
    // the gradient's rounding only, and 8-bit codes may flip on such a change.
    vec![
        ("adamw", AdamWConfig::default().build().unwrap(), 1e-5),
        ("adamw8bit", Adam8bitConfig::adamw().build().unwrap(), 1e-3),
    ]
}

#[test]
fn a_split_batch_equals_the_whole_batch_and_sharded_equals_replicated() {
    let steps = 6;
    for (name, chain, tol) in chains() {
        let whole = single(&chain, steps);
        let start: Vec<Vec<f32>> = model().iter().map(|p| values(&p.value)).collect();
        assert!(max_diff(&whole, &start) > 1e-3, "{name}: the run must move");
        let total_single = {
            let mut opt = MomentOptimizer::new(chain.clone());
            let mut p = model();
            set_grads(&mut p, 0, 0..BATCH);
            opt.step(1e-2, &mut p).unwrap();
            opt.state_memory().total_bytes
        };
        for world in [2, 4] {
            let rep = parallel(&chain, world, false, steps);
            let sh = parallel(&chain, world, true, steps);
            for (rank, ((rv, rb), (sv, sb))) in rep.iter().zip(&sh).enumerate() {
                let d = max_diff(rv, &whole);
                assert!(
                    d < tol,
                    "{name} N={world} peer {rank}: {d} from the single run"
                );
                assert!(rv == &rep[0].0, "{name} N={world}: replicas differ");
                assert!(
                    sv == rv,
                    "{name} N={world} peer {rank}: sharded != replicated by {}",
                    max_diff(sv, rv)
                );
                assert_eq!(*rb, total_single, "{name}: a replica keeps the whole state");
                let share = total_single as f64 / world as f64;
                assert!(
                    (*sb as f64) < share * 1.25 && *sb > 0,
                    "{name} N={world} peer {rank}: {sb} state bytes, 1/N is {share}"
                );
            }
            let sum: u64 = sh.iter().map(|(_, b)| b).sum();
            assert_eq!(
                sum, total_single,
                "{name} N={world}: shards add up to the whole"
            );
        }
    }
}

#[test]
fn the_plan_is_balanced_deterministic_and_covers_every_parameter() {
    let p4 = plan(4);
    assert_eq!(p4, plan(4));
    for (path, _) in PARAMS {
        assert!(p4.owner(path).is_some_and(|r| r < 4), "{path}");
    }
    let total: u64 = PARAMS
        .iter()
        .map(|(_, s)| 4 * s.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(p4.bytes_per_peer().iter().sum::<u64>(), total);
    // equal tensors spread evenly
    let even = ShardPlan::balanced(
        (0..8).map(|i| (["a", "b", "c", "d", "e", "f", "g", "h"][i], 100)),
        4,
    )
    .unwrap();
    assert_eq!(even.bytes_per_peer(), &[200, 200, 200, 200]);
    assert!(matches!(
        ShardPlan::balanced([("a", 1), ("a", 2)], 2),
        Err(DistError::Plan(_))
    ));
    assert!(matches!(
        ShardPlan::balanced([("a", 1)], 0),
        Err(DistError::Plan(_))
    ));
}

#[test]
fn a_failure_on_one_peer_fails_every_peer_and_changes_nothing() {
    let chain = AdamWConfig::default().build().unwrap();
    let results = peers(2, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(2)).unwrap();
        let mut p = model();
        set_grads(&mut p, 0, rank * 4..rank * 4 + 4);
        dp.step(1e-2, &mut p).unwrap();
        let before: Vec<Vec<f32>> = p.iter().map(|p| values(&p.value)).collect();
        let state = dp.state_memory();
        let steps = dp.optimizer().to_record().steps;
        set_grads(&mut p, 1, rank * 4..rank * 4 + 4);
        if rank == 1 {
            p[2].grad = Some(flat(&[1.0; 3])); // wrong length on this peer only
        }
        let err = dp.step(1e-2, &mut p).unwrap_err();
        let after: Vec<Vec<f32>> = p.iter().map(|p| values(&p.value)).collect();
        assert_eq!(after, before, "peer {rank}: parameters changed");
        assert_eq!(dp.state_memory(), state, "peer {rank}: state changed");
        assert_eq!(
            dp.optimizer().to_record().steps,
            steps,
            "peer {rank}: step counted"
        );
        // the next good step works on both
        set_grads(&mut p, 1, rank * 4..rank * 4 + 4);
        dp.step(1e-2, &mut p).unwrap();
        err
    });
    assert!(
        matches!(
            &results[1],
            DistError::Optim(OptimError::ShapeMismatch { .. })
        ),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[0], DistError::PeerRefused { peers: 1 }),
        "{:?}",
        results[0]
    );
}

/// Records the kind of every refused step.
#[derive(Default)]
struct Refusals(Vec<(&'static str, String)>);

impl moment_optim::Observer<B> for Refusals {
    fn on_param(&mut self, _: &moment_optim::ParamView<'_, B>) {}
    fn on_step(&mut self, _: &moment_optim::StepReport) {}
    fn on_refused(&mut self, r: &moment_optim::RefusedStep) {
        self.0.push((r.kind(), r.reason()));
    }
}

/// A peer whose own check fails inside `prepare_owned` (here: its learning rate) returns that
/// error; the others' agreement vote fails: they return `PeerRefused`, and their observers
/// see the refusal as `NotAgreed`.
#[test]
fn a_peer_refusing_in_prepare_is_not_agreed_by_the_others() {
    let chain = AdamWConfig::default().build().unwrap();
    let results = peers(2, |rank, comm| {
        let refusals = std::sync::Arc::new(Mutex::new(Refusals::default()));
        let mut opt = MomentOptimizer::new(chain.clone());
        opt.set_observer(refusals.clone());
        let mut dp = DataParallel::sharded(opt, comm, plan(2)).unwrap();
        let mut p = model();
        set_grads(&mut p, 0, rank * 4..rank * 4 + 4);
        let lr = if rank == 1 { -1.0 } else { 1e-2 };
        let err = dp.step(lr, &mut p).unwrap_err();
        let seen = std::mem::take(&mut refusals.lock().unwrap().0);
        (err, seen)
    });
    let (err0, seen0) = &results[0];
    assert!(
        matches!(err0, DistError::PeerRefused { peers: 1 }),
        "{err0:?}"
    );
    assert_eq!(seen0.len(), 1, "{seen0:?}");
    assert_eq!(seen0[0].0, "NotAgreed");
    assert!(
        seen0[0].1.contains("1 peer(s) refused the step"),
        "{seen0:?}"
    );
    let (err1, seen1) = &results[1];
    assert!(
        matches!(
            err1,
            DistError::Optim(OptimError::InvalidLearningRate { .. })
        ),
        "{err1:?}"
    );
    assert_eq!(seen1.len(), 1, "{seen1:?}");
    assert_eq!(seen1[0].0, "InvalidLearningRate");
}

#[test]
fn non_finite_gradients_on_one_peer_are_seen_by_every_peer() {
    let chain = AdamWConfig::default().build().unwrap();
    let results = peers(2, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(2)).unwrap();
        let mut p = model();
        set_grads(&mut p, 0, rank * 4..rank * 4 + 4);
        if rank == 0 {
            let mut g = values(p[3].grad.as_ref().unwrap());
            g[5] = f32::NAN;
            p[3].grad = Some(flat(&g));
        }
        dp.step(1e-2, &mut p).unwrap_err()
    });
    for (rank, e) in results.iter().enumerate() {
        assert!(
            matches!(e, DistError::Optim(OptimError::NonFiniteGradient { first_path, .. }) if first_path == "l2.weight"),
            "peer {rank}: {e:?}"
        );
    }
}

#[test]
fn group_phase_chains_cannot_be_sharded() {
    let chain: Chain<B> = ProdigyConfig::default().build().unwrap();
    let results = peers(2, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(2)).unwrap();
        let mut p = model();
        set_grads(&mut p, 0, rank * 4..rank * 4 + 4);
        dp.step(1e-2, &mut p).unwrap_err()
    });
    for e in results {
        assert!(
            matches!(
                &e,
                DistError::Optim(OptimError::UnshardableGroup { group, .. }) if group == "default"
            ),
            "{e:?}"
        );
    }
}

#[test]
fn sharded_checkpoints_resume_exactly_and_only_with_the_same_number_of_peers() {
    let chain = Adam8bitConfig::adamw().build().unwrap();
    let dir = std::env::temp_dir().join(format!("moment-dist-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let world = 2;
    // 3 steps, save, 3 more steps
    let (mid, end): (Vec<_>, Vec<_>) = peers(world, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(world)).unwrap();
        let mut p = model();
        for step in 0..3 {
            set_grads(&mut p, step, rank * 4..rank * 4 + 4);
            dp.step(1e-2, &mut p).unwrap();
        }
        dp.save_checkpoint(&dir).unwrap();
        let mid: Vec<Vec<f32>> = p.iter().map(|p| values(&p.value)).collect();
        for step in 3..6 {
            set_grads(&mut p, step, rank * 4..rank * 4 + 4);
            dp.step(1e-2, &mut p).unwrap();
        }
        (mid, p.iter().map(|p| values(&p.value)).collect::<Vec<_>>())
    })
    .into_iter()
    .unzip();
    assert!(
        dir.join("shard-0-of-2.momentck").exists() && dir.join("shard-1-of-2.momentck").exists()
    );
    // fresh optimizers, loaded, continue from the saved parameters
    let resumed = peers(world, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(world)).unwrap();
        dp.load_checkpoint(&dir, &Default::default()).unwrap();
        let mut p = model();
        for (p, v) in p.iter_mut().zip(&mid[rank]) {
            p.value = flat(v);
        }
        for step in 3..6 {
            set_grads(&mut p, step, rank * 4..rank * 4 + 4);
            dp.step(1e-2, &mut p).unwrap();
        }
        p.iter().map(|p| values(&p.value)).collect::<Vec<_>>()
    });
    assert_eq!(resumed, end, "resumed run differs");
    // four peers cannot load two shards; a shard loaded by the wrong peer is refused
    let errs = peers(4, |_, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(4)).unwrap();
        dp.load_checkpoint(&dir, &Default::default()).unwrap_err()
    });
    for e in errs {
        assert!(e.to_string().contains("number of peers"), "{e}");
    }
    std::fs::rename(dir.join("shard-0-of-2.momentck"), dir.join("tmp")).unwrap();
    std::fs::rename(
        dir.join("shard-1-of-2.momentck"),
        dir.join("shard-0-of-2.momentck"),
    )
    .unwrap();
    let errs = peers(2, |rank, comm| {
        let mut dp =
            DataParallel::sharded(MomentOptimizer::new(chain.clone()), comm, plan(2)).unwrap();
        (rank, dp.load_checkpoint(&dir, &Default::default()))
    });
    assert!(
        matches!(&errs[0].1, Err(DistError::Plan(m)) if m.contains("does not own")),
        "{:?}",
        errs[0].1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn burn_all_reduce_mode_matches_the_whole_batch_within_tolerance() {
    let chain: Chain<B> = AdamWConfig::default().build().unwrap();
    let whole = single(&chain, 4);
    let out = peers(4, |rank, comm| {
        let mut dp = DataParallel::replicated(MomentOptimizer::new(chain.clone()), comm)
            .with_grad_reduce(GradReduce::AllReduce);
        let mut p = model();
        for step in 0..4 {
            set_grads(&mut p, step, rank * 2..rank * 2 + 2);
            dp.step(1e-2, &mut p).unwrap();
        }
        p.iter().map(|p| values(&p.value)).collect::<Vec<_>>()
    });
    for (rank, v) in out.iter().enumerate() {
        assert!(v == &out[0], "peer {rank}: replicas differ within a run");
        let d = max_diff(v, &whole);
        assert!(d < 1e-5, "peer {rank}: {d} from the single run");
    }
}

#[test]
fn peers_with_different_parameters_get_an_error_not_a_panic() {
    let chain = AdamWConfig::default().build().unwrap();
    let results = peers(2, |rank, comm| {
        let mut dp = DataParallel::replicated(MomentOptimizer::new(chain.clone()), comm);
        let mut p = model();
        if rank == 1 {
            p.pop(); // one parameter fewer on this peer
        }
        dp.sync_params(&mut p)
    });
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(DistError::Plan(m)) if m.contains("same parameters")),
        "{:?}",
        results[1]
    );
}
