//! Every step `DataParallel::step` refuses reaches the optimizer's observer exactly once on
//! every peer (`Observer::on_refused`), after nothing changed — also the refusals that happen
//! before the engine's `prepare_owned` (no parameters, a gradient of the wrong length or none,
//! a path not in the plan, replicas that differ) — and a step that ran never does.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;
use common::{Watchdog, flat, noise, values};
use std::sync::{Arc, Mutex};

use burn::backend::NdArray;
use moment_dist::{BurnCollective, DataParallel, DistError, ShardPlan};
use moment_optim::{
    AdamWConfig, MomentOptimizer, Observer, OptimError, ParamTensor, ParamView, RefusedStep,
    StepReport,
};

type B = NdArray<f32>;

/// burn-collective keeps one server per backend type per process: one scenario at a time.
static LOCK: Mutex<()> = Mutex::new(());

const WORLD: usize = 2;

/// (path, elements): three tensors, so that both peers own something when sharded.
const PARAMS: [(&str, usize); 3] = [("a.weight", 64), ("b.weight", 48), ("c.bias", 8)];

/// The same values on every peer.
fn model() -> Vec<ParamTensor<B>> {
    PARAMS
        .iter()
        .enumerate()
        .map(|(i, &(path, n))| ParamTensor {
            path: path.to_string(),
            shape: vec![n],
            value: flat(&noise(10 + i as u64, n)),
            grad: None,
        })
        .collect()
}

/// This peer's gradients for step `step`.
fn set_grads(params: &mut [ParamTensor<B>], step: usize, rank: usize) {
    for (i, p) in params.iter_mut().enumerate() {
        let n = p.shape[0];
        p.grad = Some(flat(&noise((100 * step + 10 * rank + i) as u64, n)));
    }
}

fn plan() -> ShardPlan {
    ShardPlan::balanced(PARAMS.iter().map(|&(p, n)| (p, 4 * n)), WORLD).unwrap()
}

/// What the observer was told: each refusal (kind, unchanged step counter, message), and how
/// many steps it saw run.
#[derive(Default)]
struct Seen {
    refused: Vec<(&'static str, u64, String)>,
    steps: usize,
}

impl Observer<B> for Seen {
    fn on_param(&mut self, _: &ParamView<'_, B>) {}
    fn on_step(&mut self, _: &StepReport) {
        self.steps += 1;
    }
    fn on_refused(&mut self, r: &RefusedStep) {
        self.refused.push((r.kind(), r.step, r.reason()));
    }
}

/// Run `f(rank)` on `WORLD` peer threads (each registered), return their results by rank.
fn peers<T: Send>(f: impl Fn(usize, BurnCollective<B>) -> T + Sync) -> Vec<T> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::new(300);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORLD)
            .map(|rank| {
                let f = &f;
                s.spawn(move || {
                    let comm =
                        BurnCollective::<B>::register_local(rank, WORLD, &Default::default())
                            .unwrap();
                    f(rank, comm)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// One refused step on one peer: the case, the error, what the observer saw during the call.
type Outcome = (&'static str, DistError, Vec<(&'static str, u64, String)>);

/// A peer's data-parallel optimizer with a recording observer.
struct Peer {
    dp: DataParallel<B, BurnCollective<B>>,
    seen: Arc<Mutex<Seen>>,
    rank: usize,
}

impl Peer {
    fn new(rank: usize, comm: BurnCollective<B>, sharded: bool) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut opt = MomentOptimizer::new(AdamWConfig::default().build().unwrap());
        opt.set_observer(seen.clone());
        let dp = if sharded {
            DataParallel::sharded(opt, comm, plan()).unwrap()
        } else {
            DataParallel::replicated(opt, comm)
        };
        Self { dp, seen, rank }
    }

    /// A step that must be refused: nothing may change (values, state, step counter), the
    /// observer must get exactly one `on_refused` and no `on_step`.
    fn refused(&mut self, case: &'static str, lr: f64, p: &mut [ParamTensor<B>]) -> Outcome {
        let rank = self.rank;
        let before: Vec<Vec<f32>> = p.iter().map(|p| values(&p.value)).collect();
        let (state, steps) = (self.dp.state_memory(), self.dp.optimizer().steps());
        let seen_steps = self.seen.lock().unwrap().steps;
        let err = self.dp.step(lr, p).unwrap_err();
        let after: Vec<Vec<f32>> = p.iter().map(|p| values(&p.value)).collect();
        assert_eq!(after, before, "{case}, peer {rank}: parameters changed");
        assert_eq!(self.dp.state_memory(), state, "{case}, peer {rank}: state");
        assert_eq!(self.dp.optimizer().steps(), steps, "{case}, peer {rank}");
        let mut seen = self.seen.lock().unwrap();
        assert_eq!(seen.steps, seen_steps, "{case}, peer {rank}: on_step");
        let refused = std::mem::take(&mut seen.refused);
        assert_eq!(refused.len(), 1, "{case}, peer {rank}: {refused:?}");
        assert_eq!(
            refused[0].1, steps,
            "{case}, peer {rank}: the unchanged counter"
        );
        (case, err, refused)
    }

    /// A step that must run: counted, seen by `on_step`, never by `on_refused`.
    fn runs(&mut self, p: &mut [ParamTensor<B>]) {
        let steps = self.dp.optimizer().steps();
        let report = self.dp.step(1e-2, p).unwrap();
        assert_eq!(report.step, steps + 1);
        let seen = self.seen.lock().unwrap();
        assert!(seen.refused.is_empty(), "{:?}", seen.refused);
        assert_eq!(seen.steps, steps as usize + 1);
    }
}

/// Every refusal kind in turn (the replicas are compared at the first step that gets past the
/// input checks, so that case comes before the engine's own refusal), then a good step, one
/// more refusal, another good step.
fn scenario(rank: usize, comm: BurnCollective<B>, sharded: bool) -> Vec<Outcome> {
    let mut peer = Peer::new(rank, comm, sharded);
    let mut out = Vec::new();
    let mut p = model();
    out.push(peer.refused("no parameters", 1e-2, &mut []));
    set_grads(&mut p, 0, rank);
    if rank == 1 {
        p[1].grad = Some(flat(&[1.0; 3]));
    }
    out.push(peer.refused("wrong length", 1e-2, &mut p));
    set_grads(&mut p, 0, rank);
    if rank == 0 {
        p[2].grad = None;
    }
    out.push(peer.refused("missing gradient", 1e-2, &mut p));
    set_grads(&mut p, 0, rank);
    if sharded {
        let mut extra = model();
        extra.push(ParamTensor {
            path: "z.extra".into(),
            shape: vec![4],
            value: flat(&[0.5; 4]),
            grad: None,
        });
        set_grads(&mut extra, 0, rank);
        out.push(peer.refused("not in the plan", 1e-2, &mut extra));
    }
    let good = p[0].value.clone();
    if rank == 1 {
        p[0].value = flat(&noise(999, PARAMS[0].1));
    }
    out.push(peer.refused("replicas differ", 1e-2, &mut p));
    p[0].value = good;
    // refused by the engine itself (after the replicas passed): still once
    out.push(peer.refused("in prepare", -1.0, &mut p));
    peer.runs(&mut p);
    set_grads(&mut p, 1, rank);
    if rank == 0 {
        p[0].grad = Some(flat(&[1.0; 5]));
    }
    out.push(peer.refused("wrong length after a step", 1e-2, &mut p));
    set_grads(&mut p, 1, rank);
    peer.runs(&mut p);
    out
}

/// What each peer returns and its observer sees for each case: the refusing peers their own
/// error, the others `PeerRefused`; the observer the engine's error as it is, anything else
/// as `NotAgreed` with the message returned.
fn check(outcomes: &[Vec<Outcome>], sharded: bool) {
    let expected: &[(&str, [&str; WORLD])] = &[
        ("no parameters", ["no parameters to step"; 2]),
        ("wrong length", ["1 peer(s) refused", "ShapeMismatch"]),
        (
            "missing gradient",
            ["has no gradient on peer 0", "1 peer(s) refused"],
        ),
        ("not in the plan", ["`z.extra` is not in the shard plan"; 2]),
        (
            "replicas differ",
            ["1 peer(s) refused", "peer 1's parameters differ"],
        ),
        ("in prepare", ["InvalidLearningRate"; 2]),
        (
            "wrong length after a step",
            ["ShapeMismatch", "1 peer(s) refused"],
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .filter(|(case, _)| sharded || *case != "not in the plan")
        .collect();
    for (rank, outs) in outcomes.iter().enumerate() {
        assert_eq!(outs.len(), expected.len(), "peer {rank}");
        for ((case, err, seen), (want_case, want)) in outs.iter().zip(&expected) {
            assert_eq!(case, want_case);
            let (kind, _, reason) = &seen[0];
            let want = want[rank];
            match err {
                DistError::Optim(e) => {
                    assert_eq!(*kind, want, "{case}, peer {rank}: {err:?}");
                    assert_eq!(*reason, e.to_string(), "{case}, peer {rank}");
                }
                DistError::PeerRefused { peers: 1 } | DistError::Plan(_) => {
                    assert!(err.to_string().contains(want), "{case}, peer {rank}: {err}");
                    assert_eq!(*kind, "NotAgreed", "{case}, peer {rank}: the observer");
                    assert_eq!(
                        *reason,
                        OptimError::NotAgreed {
                            reason: err.to_string()
                        }
                        .to_string(),
                        "{case}, peer {rank}"
                    );
                }
                _ => panic!("{case}, peer {rank}: unexpected {err:?}"),
            }
        }
    }
}

#[test]
fn refusals_before_prepare_reach_every_peers_observer_once_when_sharded() {
    let outcomes = peers(|rank, comm| scenario(rank, comm, true));
    check(&outcomes, true);
}

#[test]
fn refusals_before_prepare_reach_every_peers_observer_once_when_replicated() {
    let outcomes = peers(|rank, comm| scenario(rank, comm, false));
    check(&outcomes, false);
}
