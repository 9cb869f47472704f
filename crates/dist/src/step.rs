//! [`DataParallel::step`] in its phases: this peer's gradients checked and collected, the
//! peers' vote on them, the gradients averaged, the replicas compared (first step), the
//! engine's checks with the peers' vote as its agreement, the update of what this peer owns,
//! and (sharded) the owners' new values broadcast. Everything before the commit changes
//! nothing on error, and every refused step reaches the optimizer's observer once.

use burn::prelude::Backend;
use burn::tensor::{ElementConversion, Tensor};
use moment_optim::{GradEntry, OptimError, ParamTensor, PreparedStep, StepReport};

use crate::{
    Collective, DataParallel, DistError, GradReduce, Result, ShardPlan, expect_len, path_order,
};

impl<B: Backend, C: Collective<B>> DataParallel<B, C> {
    /// One data-parallel step: `params` are this peer's replica with the gradients of its part
    /// of the batch (every peer passes the same paths and shapes, each with a gradient). On
    /// return every peer holds the same new values; on error no peer changed anything (a
    /// collective failure itself excepted: burn-collective has no recovery).
    ///
    /// A refused step reaches the optimizer's observer exactly once on every peer
    /// ([`Observer::on_refused`](moment_optim::Observer::on_refused)), whichever phase refused
    /// it: the engine's own refusals as they are, the others (this peer's inputs do not fit,
    /// another peer refused, a collective failed) as [`OptimError::NotAgreed`] with the message
    /// this peer returns. A failure after the commit (the sharded step's broadcast of the new
    /// values: a collective failure) is no refusal: the step ran (the observer got `on_step`).
    pub fn step(&mut self, lr: f64, params: &mut [ParamTensor<B>]) -> Result<StepReport> {
        let Gathered {
            order,
            entries,
            device,
        } = match self.gather(params) {
            Ok(g) => g,
            Err(e) => {
                // refused before the engine saw the step: its observer learns it here
                self.opt.notify_refused(lr, &observed(&e));
                return Err(e);
            }
        };
        let mut prep = self.prepare_agreed(lr, entries, &device)?;
        // committed: from here on the step has happened on every peer
        self.update_owned(&mut prep, params, &order);
        let report = self.opt.finish(prep);
        self.broadcast_owned(params, &order)?;
        Ok(report)
    }

    /// Everything before the engine, in the order every peer runs it: this peer's gradients
    /// checked and collected ([`local_gradients`]), the peers' vote on those checks (before
    /// the big reduction, whose lengths must match), the gradients averaged
    /// ([`DataParallel::average`]) and, on the first step, the replicas compared
    /// ([`DataParallel::check_replicas`]). Changes nothing but the "replicas checked" flag,
    /// once they passed.
    fn gather(&mut self, params: &[ParamTensor<B>]) -> Result<Gathered<B>> {
        let order = path_order(params);
        let (grads, mut local_error) =
            local_gradients(params, &order, self.plan.as_ref(), self.comm.rank());
        let device = match params.first() {
            Some(p) => p.value.device(),
            None => return Err(DistError::Plan("no parameters to step".into())),
        };
        vote(&mut self.comm, local_error.is_some(), &device)
            .map_err(|e| local_error.take().unwrap_or(e))?;
        let sizes: Vec<usize> = grads.iter().map(|g| g.dims()[0]).collect();
        let mean = self.average(grads)?;
        let entries = grad_entries(params, &order, &sizes, mean);
        if !self.checked {
            self.check_replicas(params, &order, &device)?;
            self.checked = true;
        }
        Ok(Gathered {
            order,
            entries,
            device,
        })
    }

    /// The peers' mean of `grads` (this peer's gradients in path order), as one flat buffer:
    /// one collective call for all tensors ([`GradReduce`] says which).
    fn average(&mut self, grads: Vec<Tensor<B, 1>>) -> Result<Tensor<B, 1>> {
        let flat = if grads.is_empty() {
            return Err(DistError::Plan("no parameters to step".into()));
        } else {
            Tensor::cat(grads, 0)
        };
        match self.reduce {
            GradReduce::AllReduce => self.comm.all_reduce_mean(flat),
            GradReduce::RankOrdered => rank_ordered_mean(&mut self.comm, flat),
        }
    }

    /// The first step's check that the replicas are identical: rank 0's per-tensor checksums
    /// broadcast and compared bit for bit, then a vote. A model initialised on each peer
    /// instead of cloned — or burn's lazy initialisation run after cloning — would otherwise
    /// diverge silently.
    fn check_replicas(
        &mut self,
        params: &[ParamTensor<B>],
        order: &[usize],
        device: &B::Device,
    ) -> Result<()> {
        let rank = self.comm.rank();
        let mine = checksums(params, order);
        let theirs = self.comm.broadcast(0, (rank == 0).then(|| mine.clone()))?;
        let same = mine.to_data().as_bytes() == theirs.to_data().as_bytes();
        let err = (!same).then(|| {
            DistError::Plan(format!(
                "peer {rank}'s parameters differ from peer 0's at the first step: start every \
                 peer from the same values (DataParallel::sync_params / sync_module)"
            ))
        });
        let failed = err.is_some();
        vote(&mut self.comm, failed, device).map_err(|e| err.unwrap_or(e))
    }

    /// The engine's checks and commit
    /// ([`prepare_owned`](moment_optim::MomentOptimizer::prepare_owned), state only for the
    /// paths this peer owns), with the peers' vote as its agreement: once every peer's checks
    /// passed, every peer commits; otherwise none does. A peer whose check fails still casts
    /// its (failing) vote so that the others do not wait. The engine tells its observer about
    /// every refusal here itself.
    fn prepare_agreed(
        &mut self,
        lr: f64,
        entries: Vec<GradEntry<B>>,
        device: &B::Device,
    ) -> Result<PreparedStep<B>> {
        let rank = self.comm.rank();
        let Self {
            opt, comm, plan, ..
        } = self;
        let owns = |path: &str| plan.as_ref().is_none_or(|p| p.owner(path) == Some(rank));
        let mut voted = false;
        // The vote's own error (a peer refused, or the collective failed) is what this peer
        // returns; the engine and its observer get it as `NotAgreed`.
        let mut not_agreed: Option<DistError> = None;
        let prepared = opt.prepare_owned(lr, entries, &owns, &mut || {
            voted = true;
            vote(comm, false, device).map_err(|e| {
                let reason = e.to_string();
                not_agreed = Some(e);
                OptimError::NotAgreed { reason }
            })
        });
        match prepared {
            Ok(p) => Ok(p),
            Err(e) => {
                if !voted {
                    // tell the others (they fail their vote); this peer's own error wins
                    let _ = vote(comm, true, device);
                }
                Err(not_agreed.unwrap_or(e.into()))
            }
        }
    }

    /// The committed step's updates of the parameters this peer owns (all of them when
    /// replicated), in path order.
    fn update_owned(
        &mut self,
        prep: &mut PreparedStep<B>,
        params: &mut [ParamTensor<B>],
        order: &[usize],
    ) {
        for &i in order {
            if self.owns(&params[i].path) {
                let device = params[i].value.device();
                let value = std::mem::replace(&mut params[i].value, Tensor::zeros([0], &device));
                params[i].value = self.opt.apply(prep, &params[i].path.clone(), value);
            }
        }
    }

    /// Sharded only: every owner's new values to every peer, one batched broadcast per owner
    /// (in rank order; owners of nothing skipped).
    fn broadcast_owned(&mut self, params: &mut [ParamTensor<B>], order: &[usize]) -> Result<()> {
        let rank = self.comm.rank();
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        for root in 0..plan.world() {
            let mine: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| plan.owner(&params[i].path) == Some(root))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let send = (root == rank)
                .then(|| Tensor::cat(mine.iter().map(|&i| params[i].value.clone()).collect(), 0));
            let got = self.comm.broadcast(root, send)?;
            let total = mine.iter().map(|&i| params[i].value.dims()[0]).sum();
            expect_len(&got, total, root, rank)?;
            if root != rank {
                let mut offset = 0;
                for &i in &mine {
                    let n = params[i].value.dims()[0];
                    params[i].value = got.clone().slice(offset..offset + n);
                    offset += n;
                }
            }
        }
        Ok(())
    }
}

/// What [`DataParallel::step`]'s phases before the engine hand on.
struct Gathered<B: Backend> {
    /// Indices into the parameters, in path order.
    order: Vec<usize>,
    /// The averaged gradients as the engine's entries, in path order.
    entries: Vec<GradEntry<B>>,
    /// The first parameter's device (where the votes are cast).
    device: B::Device,
}

/// This peer's gradients of `params` in `order`, and the first thing wrong with its inputs
/// (per parameter: a gradient of the wrong length or none, then a path not in `plan`).
fn local_gradients<B: Backend>(
    params: &[ParamTensor<B>],
    order: &[usize],
    plan: Option<&ShardPlan>,
    rank: usize,
) -> (Vec<Tensor<B, 1>>, Option<DistError>) {
    let mut grads = Vec::with_capacity(params.len());
    let mut local_error: Option<DistError> = None;
    for &i in order {
        let p = &params[i];
        match &p.grad {
            Some(g) if g.dims()[0] == p.value.dims()[0] => grads.push(g.clone()),
            Some(g) => {
                local_error.get_or_insert(DistError::Optim(OptimError::ShapeMismatch {
                    path: p.path.clone(),
                    expected: p.shape.clone(),
                    actual: g.dims().to_vec(),
                }));
            }
            None => {
                local_error.get_or_insert(DistError::Plan(format!(
                    "`{}` has no gradient on peer {rank}: every peer passes every \
                     parameter with a gradient",
                    p.path
                )));
            }
        }
        if let Some(plan) = plan
            && plan.owner(&p.path).is_none()
        {
            local_error.get_or_insert(DistError::Plan(format!(
                "`{}` is not in the shard plan",
                p.path
            )));
        }
    }
    (grads, local_error)
}

/// [`GradReduce::RankOrdered`]: every peer broadcasts `flat`, every peer adds the buffers in
/// rank order and divides by the number of peers.
fn rank_ordered_mean<B: Backend, C: Collective<B>>(
    comm: &mut C,
    flat: Tensor<B, 1>,
) -> Result<Tensor<B, 1>> {
    let (rank, world) = (comm.rank(), comm.world());
    let mut sum: Option<Tensor<B, 1>> = None;
    for root in 0..world {
        let t = comm.broadcast(root, (root == rank).then(|| flat.clone()))?;
        expect_len(&t, flat.dims()[0], root, rank)?;
        sum = Some(match sum {
            None => t,
            Some(s) => s + t,
        });
    }
    Ok(match sum {
        Some(s) => s.div_scalar(world as f32),
        None => flat,
    })
}

/// The engine's entries for the averaged gradients `mean` (`sizes` elements each, in
/// `order`), each with its parameter's current value.
fn grad_entries<B: Backend>(
    params: &[ParamTensor<B>],
    order: &[usize],
    sizes: &[usize],
    mean: Tensor<B, 1>,
) -> Vec<GradEntry<B>> {
    let mut entries = Vec::with_capacity(order.len());
    let mut offset = 0;
    for (&i, &n) in order.iter().zip(sizes) {
        let p = &params[i];
        entries.push(GradEntry {
            path: p.path.clone(),
            param_shape: p.shape.clone(),
            grad_shape: p.shape.clone(),
            grad: mean.clone().slice(offset..offset + n),
            param: Some(p.value.clone()),
        });
        offset += n;
    }
    entries
}

/// What the optimizer's observer is told about a step refused before the engine saw it: the
/// engine's own error as it is; anything else (this peer's inputs do not fit, another peer
/// refused, a collective failed) as [`OptimError::NotAgreed`] with the message this peer
/// returns — as [`DataParallel::prepare_agreed`]'s vote reports it to the engine.
fn observed(e: &DistError) -> OptimError {
    match e {
        DistError::Optim(e) => e.clone(),
        other => OptimError::NotAgreed {
            reason: other.to_string(),
        },
    }
}

/// Per parameter (in `order`) the sum and the sum of squares of its values, as one tensor.
fn checksums<B: Backend>(params: &[ParamTensor<B>], order: &[usize]) -> Tensor<B, 1> {
    Tensor::cat(
        order
            .iter()
            .flat_map(|&i| {
                let v = params[i].value.clone();
                [v.clone().sum(), v.square().sum()]
            })
            .collect(),
        0,
    )
}

/// One 1-element all-reduce: did any peer fail? (Every peer casts the same votes, in the same
/// order: on its inputs, on its replica at the first step, in the engine's agreement.)
fn vote<B: Backend, C: Collective<B>>(
    comm: &mut C,
    failed: bool,
    device: &B::Device,
) -> Result<()> {
    let flag = Tensor::<B, 1>::from_floats([if failed { 1.0 } else { 0.0 }], device);
    let total = comm.all_reduce_sum(flag)?.into_scalar().elem::<f32>();
    if total > 0.0 {
        Err(DistError::PeerRefused {
            peers: total as usize,
        })
    } else {
        Ok(())
    }
}
