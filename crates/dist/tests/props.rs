//! Properties of `moment-dist` (docs/distributed.md), on random inputs:
//!
//! - `ShardPlan::balanced` assigns every parameter to exactly one peer and accounts its bytes,
//!   depends on the paths and sizes alone (not on their order), follows its documented rule
//!   (largest first, to the peer with the fewest bytes, lowest rank on ties, equal sizes in path
//!   order), so no peer has more than one tensor's bytes above another, and refuses invalid
//!   input with a typed error;
//! - a data-parallel run on a batch split over N peers (N = 1..=3, one thread each,
//!   burn-collective's local mode) equals the single-process run on the whole batch, and every
//!   peer ends with the same values;
//! - sharded state gives bitwise the replicated run's parameters, the shards' state adds up to a
//!   replica's, and a run repeated is bitwise the same (rank-ordered gradient mean);
//! - a step refused on one peer (bad gradient, unplanned path, different replica) fails on every
//!   peer with a typed error and changes nothing; peers passing different parameters to
//!   `sync_params` get a typed error, not a panic.
//!
//! Case count: `PROPTEST_CASES` for the plan properties; at most 8 for the multi-peer ones (each
//! case starts peer threads, and burn-collective runs one scenario per process at a time).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;
use common::{Watchdog, flat, noise, values};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use burn::backend::NdArray;
use moment_dist::{BurnCollective, DataParallel, DistError, ShardPlan};
use moment_optim::{
    AdamWConfig, Chain, MomentOptimizer, OptimError, ParamTensor,
    transforms::scale_by_learning_rate,
};
use proptest::prelude::*;
use proptest::sample::Index;

type B = NdArray<f32>;

/// burn-collective keeps one server per backend type per process: one scenario at a time.
static LOCK: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// ShardPlan

/// Up to 12 parameters with distinct paths and sizes in bytes (zero included).
fn plan_items() -> impl Strategy<Value = Vec<(String, usize)>> {
    prop::collection::btree_map(0u16..400, 0usize..=5_000, 0..=12).prop_map(|m| {
        m.into_iter()
            .map(|(k, b)| {
                (
                    format!("layer{}.{}", k / 4, ["w", "b", "g", "s"][k as usize % 4]),
                    b,
                )
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect()
    })
}

fn balanced(items: &[(String, usize)], world: usize) -> Result<ShardPlan, DistError> {
    ShardPlan::balanced(items.iter().map(|(p, b)| (p.as_str(), *b)), world)
}

proptest! {
    /// Every parameter has exactly one owner in `0..world`; `owned(r)` lists each peer's paths
    /// in path order and together they are exactly the input's paths; `bytes_per_peer()[r]` is
    /// the sum of the sizes `r` owns.
    #[test]
    fn plan_owns_every_parameter_once_and_accounts_its_bytes(
        items in plan_items(),
        world in 1usize..=8,
    ) {
        let plan = balanced(&items, world).unwrap();
        prop_assert_eq!(plan.world(), world);
        prop_assert_eq!(plan.bytes_per_peer().len(), world);
        let mut seen = BTreeSet::new();
        for r in 0..world {
            let owned: Vec<&str> = plan.owned(r).collect();
            prop_assert!(owned.windows(2).all(|w| w[0] < w[1]), "peer {r}: {owned:?} not in path order");
            let mut bytes = 0u64;
            for p in owned {
                prop_assert!(seen.insert(p.to_string()), "`{p}` owned twice");
                prop_assert_eq!(plan.owner(p), Some(r));
                let (_, b) = items.iter().find(|(q, _)| q == p).expect("an owned path is an input path");
                bytes += *b as u64;
            }
            prop_assert_eq!(plan.bytes_per_peer()[r], bytes, "peer {}", r);
        }
        let inputs: BTreeSet<String> = items.iter().map(|(p, _)| p.clone()).collect();
        prop_assert_eq!(seen, inputs);
        prop_assert_eq!(plan.owner("not.a.parameter"), None);
    }

    /// The plan depends on the paths and sizes alone: computing it twice, or from the same
    /// parameters in another order, gives the same plan (every peer computes it without talking).
    #[test]
    fn plan_is_deterministic_and_ignores_the_input_order(
        (items, shuffled) in plan_items().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        world in 1usize..=8,
    ) {
        let a = balanced(&items, world).unwrap();
        prop_assert_eq!(&a, &balanced(&items, world).unwrap());
        prop_assert_eq!(&a, &balanced(&shuffled, world).unwrap());
        let reversed: Vec<_> = items.iter().rev().cloned().collect();
        prop_assert_eq!(&a, &balanced(&reversed, world).unwrap());
    }

    /// The documented rule's consequences: no peer holds more than the largest tensor's bytes
    /// above another; with at least as many peers as (non-empty) tensors each gets its own peer;
    /// `n` equal tensors in path order go round-robin from rank 0 (lowest rank on ties), so peer
    /// `r` gets `n / world` of them plus one if `r < n % world`.
    #[test]
    fn plan_follows_the_largest_first_fewest_bytes_rule(
        items in plan_items(),
        world in 1usize..=8,
        n_equal in 0usize..=20,
        size in 1usize..=10_000,
    ) {
        let plan = balanced(&items, world).unwrap();
        let loads = plan.bytes_per_peer();
        let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
        let largest = items.iter().map(|(_, b)| *b as u64).max().unwrap_or(0);
        prop_assert!(spread <= largest, "loads {loads:?}: spread {spread} > largest tensor {largest}");
        if world >= items.len() && items.iter().all(|(_, b)| *b > 0) {
            let owners: BTreeSet<usize> = items.iter().map(|(p, _)| plan.owner(p).unwrap()).collect();
            prop_assert_eq!(owners.len(), items.len(), "one tensor per peer: {:?}", loads);
        }

        let equal: Vec<(String, usize)> = (0..n_equal).map(|i| (format!("p{i:03}"), size)).collect();
        let plan = balanced(&equal, world).unwrap();
        for (i, (p, _)) in equal.iter().enumerate() {
            prop_assert_eq!(plan.owner(p), Some(i % world), "`{}`", p);
        }
        for r in 0..world {
            let count = n_equal / world + usize::from(r < n_equal % world);
            prop_assert_eq!(plan.bytes_per_peer()[r], (count * size) as u64, "peer {}", r);
        }
    }

    /// Invalid input is a typed error, never a panic: a plan for zero peers, a repeated path
    /// (whatever its sizes), a rank outside `0..world` at registration.
    #[test]
    fn invalid_plans_and_ranks_are_typed_errors(
        items in plan_items(),
        dup in any::<Index>(),
        dup_bytes in 0usize..=5_000,
        world in 0usize..=8,
        rank_over in 0usize..=4,
    ) {
        prop_assert!(matches!(balanced(&items, 0), Err(DistError::Plan(_))));
        if !items.is_empty() {
            let mut with_dup = items.clone();
            let (p, _) = items[dup.index(items.len())].clone();
            with_dup.insert(dup.index(with_dup.len() + 1), (p.clone(), dup_bytes));
            for w in 1..=3 {
                let r = balanced(&with_dup, w);
                prop_assert!(
                    matches!(&r, Err(DistError::Plan(m)) if m.contains(&p)),
                    "duplicate `{}`: {:?}", p, r
                );
            }
        }
        // the rank check comes before burn-collective is contacted
        let r = BurnCollective::<B>::register_local(world + rank_over, world, &Default::default());
        prop_assert!(matches!(r, Err(DistError::Plan(_))), "{:?}", r);
    }
}

/// The case `invalid_plans_and_ranks_are_typed_errors` shrank to: a path repeated with another
/// size is not next to its twin once sorted by size, and was accepted (last size won the owner,
/// both sizes were counted).
#[test]
fn a_path_repeated_with_another_size_is_refused() {
    let r = ShardPlan::balanced([("layer0.w", 0), ("layer0.w", 685), ("layer5.w", 685)], 1);
    assert!(
        matches!(&r, Err(DistError::Plan(m)) if m.contains("duplicate path `layer0.w`")),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Peers (one thread each, burn-collective's local mode)

const LR: f64 = 0.1;

fn all_values(p: &[ParamTensor<B>]) -> Vec<Vec<f32>> {
    p.iter().map(|p| values(&p.value)).collect()
}

fn path(i: usize) -> String {
    format!("t{i}.weight")
}

/// Flat parameters `t<i>.weight` of the given lengths, values from `seed`.
fn model(sizes: &[usize], seed: u64) -> Vec<ParamTensor<B>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| ParamTensor {
            path: path(i),
            shape: vec![n],
            value: flat(&noise(seed.wrapping_add(i as u64), n)),
            grad: None,
        })
        .collect()
}

/// Example `e`'s loss is `s_e/2 · ‖θ − t_e‖²` per tensor (a quadratic: the gradient depends on
/// the parameters, so the trajectory matters); the gradient of a set of examples is their mean.
fn set_grads(
    params: &mut [ParamTensor<B>],
    seed: u64,
    step: usize,
    examples: std::ops::Range<usize>,
) {
    let count = examples.len() as f32;
    for (i, p) in params.iter_mut().enumerate() {
        let theta = values(&p.value);
        let mut g = vec![0.0f32; theta.len()];
        for e in examples.clone() {
            // a seed domain of its own (not the parameters' `seed + i`)
            let target = noise(
                (seed ^ 0x5DEE_CE66_D1CE_F00D).wrapping_add((step * 1000 + e * 10 + i) as u64),
                theta.len(),
            );
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

fn plan(sizes: &[usize], world: usize) -> ShardPlan {
    let paths: Vec<String> = (0..sizes.len()).map(path).collect();
    ShardPlan::balanced(
        paths
            .iter()
            .map(String::as_str)
            .zip(sizes.iter().map(|n| 4 * n)),
        world,
    )
    .unwrap()
}

/// Plain SGD: `θ ← θ − lr·g` (linear in the gradient).
fn sgd() -> Chain<B> {
    Chain::new("sgd").then(scale_by_learning_rate())
}

/// Run `f(rank, comm)` on `world` peer threads (each registered), return their results by rank.
fn peers<T: Send>(world: usize, f: impl Fn(usize, BurnCollective<B>) -> T + Sync) -> Vec<T> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::new(120);
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

fn dp(
    chain: &Chain<B>,
    comm: BurnCollective<B>,
    sharded: Option<ShardPlan>,
) -> DataParallel<B, BurnCollective<B>> {
    let opt = MomentOptimizer::new(chain.clone());
    match sharded {
        Some(plan) => DataParallel::sharded(opt, comm, plan).unwrap(),
        None => DataParallel::replicated(opt, comm),
    }
}

/// Each peer's final parameters and state bytes after `steps` steps, peer `r` computing the
/// gradient of examples `r·per .. (r+1)·per`. A peer's error is returned, not unwrapped (an
/// error fails every peer, so none is left waiting).
fn parallel(
    chain: &Chain<B>,
    sizes: &[usize],
    seed: u64,
    world: usize,
    per: usize,
    sharded: bool,
    steps: usize,
) -> Vec<Result<(Vec<Vec<f32>>, u64), DistError>> {
    peers(world, |rank, comm| {
        let mut dp = dp(chain, comm, sharded.then(|| plan(sizes, world)));
        let mut p = model(sizes, seed);
        for step in 0..steps {
            set_grads(&mut p, seed, step, rank * per..(rank + 1) * per);
            dp.step(LR, &mut p)?;
        }
        Ok((all_values(&p), dp.state_memory().total_bytes))
    })
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y)
        })
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f32::max)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=24, 1..=5)
}

/// How one peer breaks a step in [`a_refused_step_fails_every_peer_and_changes_nothing`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// A gradient one element too long.
    WrongLength,
    /// No gradient for one parameter.
    MissingGrad,
    /// A path the shard plan does not have (sharded only; replicated runs use `WrongLength`).
    NotInPlan,
    /// Different parameter values from the other peers at the first step.
    Replica,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ProptestConfig::default().cases.min(8)))]

    /// Averaging N peers' gradients of equal micro-batches and stepping (SGD, linear in the
    /// gradient; replicated or sharded) gives the single-process whole-batch run's parameters
    /// within f32 rounding, and every peer ends with bitwise the same values.
    #[test]
    fn a_split_batch_equals_the_whole_batch(
        world in 1usize..=3,
        per in 1usize..=3,
        sizes in sizes(),
        steps in 1usize..=3,
        sharded in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let chain = sgd();
        let mut opt = MomentOptimizer::new(chain.clone());
        let mut p = model(&sizes, seed);
        let start = all_values(&p);
        for step in 0..steps {
            set_grads(&mut p, seed, step, 0..world * per);
            opt.step(LR, &mut p).unwrap();
        }
        let whole = all_values(&p);
        prop_assert!(max_rel_diff(&whole, &start) > 1e-4, "the whole-batch run moves");
        let out = parallel(&chain, &sizes, seed, world, per, sharded, steps);
        for (rank, r) in out.iter().enumerate() {
            let (v, _) = r.as_ref().map_err(|e| TestCaseError::fail(format!("peer {rank}: {e}")))?;
            prop_assert!(out[0].as_ref().is_ok_and(|(v0, _)| v0 == v), "peer {} differs from peer 0", rank);
            let d = max_rel_diff(v, &whole);
            prop_assert!(d < 1e-5, "peer {}: {} from the whole-batch run", rank, d);
        }
    }

    /// With the default rank-ordered gradient mean, sharded state gives bitwise the replicated
    /// run's parameters on every peer (AdamW), the shards' state bytes add up to one replica's,
    /// and repeating the replicated run gives bitwise the same parameters.
    #[test]
    fn sharded_equals_replicated_bitwise_and_runs_repeat_exactly(
        world in 1usize..=3,
        sizes in sizes(),
        steps in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let chain = AdamWConfig::default().build().unwrap();
        let ok = |out: Vec<Result<(Vec<Vec<f32>>, u64), DistError>>| {
            out.into_iter()
                .enumerate()
                .map(|(rank, r)| r.map_err(|e| TestCaseError::fail(format!("peer {rank}: {e}"))))
                .collect::<Result<Vec<_>, _>>()
        };
        let rep = ok(parallel(&chain, &sizes, seed, world, 2, false, steps))?;
        let sh = ok(parallel(&chain, &sizes, seed, world, 2, true, steps))?;
        let again = ok(parallel(&chain, &sizes, seed, world, 2, false, steps))?;
        prop_assert!(all_values(&model(&sizes, seed)) != rep[0].0, "the run moves");
        for rank in 0..world {
            prop_assert!(rep[rank].0 == rep[0].0, "replicated: peer {} differs from peer 0", rank);
            prop_assert!(
                sh[rank].0 == rep[0].0,
                "peer {}: sharded differs from replicated by {}", rank, max_rel_diff(&sh[rank].0, &rep[0].0)
            );
            prop_assert!(again[rank].0 == rep[rank].0, "peer {}: the repeated run differs", rank);
            prop_assert_eq!(rep[rank].1, rep[0].1, "replicated state bytes, peer {}", rank);
        }
        let shards: u64 = sh.iter().map(|(_, b)| b).sum();
        prop_assert_eq!(shards, rep[0].1, "shards' state bytes vs one replica's");
    }

    /// A step that one peer refuses (a gradient of the wrong length, a missing gradient, a path
    /// not in the shard plan, or — at the first step — values that differ from peer 0's) fails
    /// on every peer: the refusing peer with its own typed error, the others with
    /// `DistError::PeerRefused`; no peer's parameters, state or step count change, and the
    /// next good step works with every peer in lockstep.
    #[test]
    fn a_refused_step_fails_every_peer_and_changes_nothing(
        world in 2usize..=3,
        bad in any::<Index>(),
        which in any::<Index>(),
        sizes in sizes(),
        sharded in any::<bool>(),
        fault in prop_oneof![
            Just(Fault::WrongLength),
            Just(Fault::MissingGrad),
            Just(Fault::NotInPlan),
            Just(Fault::Replica),
        ],
        seed in any::<u64>(),
    ) {
        let fault = if fault == Fault::NotInPlan && !sharded { Fault::WrongLength } else { fault };
        let bad = bad.index(world);
        let j = which.index(sizes.len());
        let chain = AdamWConfig::default().build().unwrap();
        let sizes = &sizes;
        let out = peers(world, |rank, comm| {
            let mut dp = dp(&chain, comm, sharded.then(|| plan(sizes, world)));
            let mut p = model(sizes, seed);
            let examples = rank * 2..rank * 2 + 2;
            if fault != Fault::Replica {
                set_grads(&mut p, seed, 0, examples.clone());
                dp.step(LR, &mut p)?;
            } else if rank == bad {
                let mut v = values(&p[j].value);
                v[0] += 1.0;
                p[j].value = flat(&v);
            }
            let before = all_values(&p);
            let state = dp.state_memory();
            let count = dp.optimizer().to_record().steps;
            set_grads(&mut p, seed, 1, examples.clone());
            let path = p[j].path.clone();
            if rank == bad {
                match fault {
                    Fault::WrongLength => p[j].grad = Some(flat(&vec![0.5; sizes[j] + 1])),
                    Fault::MissingGrad => p[j].grad = None,
                    Fault::NotInPlan => p[j].path = "zz.not.planned".into(),
                    Fault::Replica => {}
                }
            }
            let refused = dp.step(LR, &mut p);
            p[j].path = path;
            let unchanged = all_values(&p) == before
                && dp.state_memory() == state
                && dp.optimizer().to_record().steps == count;
            if fault == Fault::Replica {
                dp.sync_params(&mut p)?;
            }
            set_grads(&mut p, seed, 1, examples);
            dp.step(LR, &mut p)?;
            Ok::<_, DistError>((refused, unchanged, all_values(&p)))
        });
        let mut last = None;
        for (rank, r) in out.into_iter().enumerate() {
            let (refused, unchanged, after) =
                r.map_err(|e| TestCaseError::fail(format!("peer {rank}, good step: {e}")))?;
            let err = match refused {
                Ok(_) => return Err(TestCaseError::fail(format!("peer {rank}: the step was not refused"))),
                Err(e) => e,
            };
            prop_assert!(unchanged, "peer {}: the refused step changed something ({})", rank, err);
            // the peer(s) whose own check fails; with different replicas that is every peer
            // whose values differ from peer 0's
            let own = match fault {
                Fault::Replica if bad == 0 => rank != 0,
                _ => rank == bad,
            };
            let expected = if !own {
                matches!(err, DistError::PeerRefused { peers } if peers >= 1)
            } else {
                match fault {
                    Fault::WrongLength => matches!(&err, DistError::Optim(OptimError::ShapeMismatch { path, .. }) if *path == self::path(j)),
                    Fault::MissingGrad => matches!(&err, DistError::Plan(m) if m.contains("no gradient")),
                    Fault::NotInPlan => matches!(&err, DistError::Plan(m) if m.contains("not in the shard plan")),
                    Fault::Replica => matches!(&err, DistError::Plan(m) if m.contains("differ from peer 0")),
                }
            };
            prop_assert!(expected, "peer {} (bad peer {}, {:?}): {:?}", rank, bad, fault, err);
            if let Some(prev) = &last {
                prop_assert!(prev == &after, "peer {} differs after the good step", rank);
            }
            last = Some(after);
        }
    }

    /// `sync_params` gives every peer that passes rank 0's paths and shapes rank 0's values;
    /// a peer passing different parameters (one tensor fewer or longer), or every peer when
    /// rank 0 does, gets a typed error naming the mismatch, not a slicing panic.
    #[test]
    fn sync_params_with_different_parameters_is_a_typed_error(
        world in 2usize..=3,
        bad in any::<Index>(),
        which in any::<Index>(),
        sizes in prop::collection::vec(1usize..=16, 2..=4),
        drop_it in any::<bool>(),
        extra in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let bad = bad.index(world);
        let j = which.index(sizes.len());
        let chain = sgd();
        let sizes = &sizes;
        let out = peers(world, |rank, comm| {
            let mut dp = dp(&chain, comm, None);
            // different values on every peer: sync_params must replace them
            let mut p = model(sizes, seed.wrapping_add(1000 * rank as u64));
            if rank == bad {
                if drop_it {
                    p.remove(j);
                } else {
                    let n = sizes[j] + extra;
                    p[j].shape = vec![n];
                    p[j].value = flat(&noise(seed, n));
                }
            }
            let r = dp.sync_params(&mut p);
            (r, all_values(&p))
        });
        let root = all_values(&model(sizes, seed));
        for (rank, (r, v)) in out.iter().enumerate() {
            let matches_root = if bad == 0 { rank == 0 } else { rank != bad };
            if matches_root {
                prop_assert!(r.is_ok(), "peer {}: {:?}", rank, r);
                if bad != 0 {
                    prop_assert!(v == &root, "peer {} did not get rank 0's values", rank);
                }
            } else {
                prop_assert!(
                    matches!(r, Err(DistError::Plan(m)) if m.contains("same parameters")),
                    "peer {} (bad peer {}): {:?}", rank, bad, r
                );
            }
        }
    }
}
