//! Data-parallel optimizer steps and sharded optimizer state (ZeRO stage 1) for
//! [`moment_optim`], over Burn's own collective engine, `burn-collective`.
//!
//! Each of N peers (a thread per device in one process — burn-collective's local mode — or
//! nodes in its global mode) holds a full replica of the parameters and computes gradients on
//! its part of the batch. [`DataParallel::step`] then
//!
//! 1. all-reduces the gradients (mean, every tensor in one flat buffer: one collective call),
//!    so global clipping, the non-finite policy and the monitor see the same numbers on every
//!    peer;
//! 2. checks and prepares the step on every peer ([`MomentOptimizer::prepare_owned`]) and
//!    agrees on the outcome (one 1-element all-reduce): if any peer's check fails, every peer
//!    returns an error and no peer changed anything (every refused step, whatever refused it,
//!    reaches the optimizer's observer once on every peer);
//! 3. updates either every parameter (replicated state) or only the parameters this peer
//!    owns under a [`ShardPlan`] (sharded state: each peer keeps the optimizer state of about
//!    1/N of the parameter bytes), and in the sharded case
//! 4. sends the new values from each owner to every peer (one broadcast per peer, its
//!    parameters batched into one buffer).
//!
//! Collective operations sit behind the small [`Collective`] trait; [`BurnCollective`]
//! implements it with burn-collective. docs/distributed.md has the costs and the limits.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use moment_dist::{BurnCollective, DataParallel, ShardPlan};
//! use moment_optim::{AdamWConfig, MomentOptimizer};
//!
//! # fn peer(rank: usize, world: usize, params: &mut [moment_optim::ParamTensor<NdArray>])
//! # -> Result<(), moment_dist::DistError> {
//! // one thread per peer; every peer registers, then steps with its own gradients
//! let comm = BurnCollective::<NdArray>::register_local(rank, world, &Default::default())?;
//! let plan = ShardPlan::balanced(params.iter().map(|p| (p.path.as_str(), 4 * p.value.dims()[0])), world)?;
//! let opt = MomentOptimizer::new(AdamWConfig::default().build()?);
//! let mut dp = DataParallel::sharded(opt, comm, plan)?;
//! dp.step(1e-3, params)?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use moment_optim::{
    MomentOptimizer, OptimError, ParamTensor, StateMemory, StepReport, module_params,
    module_values, set_module_params,
};

mod step;

/// Errors of distributed steps: moment-dist's own failures, and the optimizer's
/// ([`DistError::Optim`], message and source passed through).
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A burn-collective operation failed.
    #[error("collective `{op}` failed on peer {rank}: {detail}")]
    Collective {
        /// The operation (`register`, `all_reduce`, `broadcast`, `finish`).
        op: &'static str,
        /// This peer's rank.
        rank: usize,
        /// burn-collective's error, as it prints it.
        detail: String,
    },
    /// This peer's optimizer refused the step (a check of
    /// [`MomentOptimizer::prepare_owned`], or loading a checkpoint); nothing changed on any
    /// peer (the others return [`DistError::PeerRefused`]).
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Another peer refused the step (its own error is reported there); this peer changed
    /// nothing either. (This peer's observer sees it as [`OptimError::NotAgreed`].)
    #[error("distributed step: {peers} peer(s) refused the step; nothing changed")]
    PeerRefused {
        /// How many peers voted no.
        peers: usize,
    },
    /// A shard plan or a peer's inputs are inconsistent.
    #[error("shard plan: {0}")]
    Plan(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DistError>;

/// The collective operations a data-parallel step needs, on flat f32 tensors. Every peer
/// calls the same operations in the same order (each call is a barrier).
pub trait Collective<B: Backend> {
    /// This peer's rank in `0..world()`.
    fn rank(&self) -> usize;
    /// Number of peers.
    fn world(&self) -> usize;
    /// Element-wise mean over all peers (every peer passes the same length).
    fn all_reduce_mean(&mut self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>>;
    /// Element-wise sum over all peers.
    fn all_reduce_sum(&mut self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>>;
    /// `root`'s tensor on every peer: the root passes `Some`, the others `None`.
    fn broadcast(&mut self, root: usize, t: Option<Tensor<B, 1>>) -> Result<Tensor<B, 1>>;
}

/// [`Collective`] over burn-collective (local mode: one thread per peer in this process;
/// global mode: see docs/distributed.md for its 0.21.0 limits). `B` is the inner (non-autodiff)
/// backend, as burn-collective requires.
#[derive(Debug)]
pub struct BurnCollective<B: Backend> {
    id: PeerId,
    rank: usize,
    world: usize,
    finished: bool,
    _b: PhantomData<B>,
}

impl<B: Backend> BurnCollective<B> {
    /// Register peer `rank` of `world` peers of this process (local mode) on `device`. Blocks
    /// until all `world` peers have registered; call it from each peer's own thread.
    pub fn register_local(rank: usize, world: usize, device: &B::Device) -> Result<Self> {
        Self::register(
            rank,
            world,
            device,
            CollectiveConfig::default().with_num_devices(world),
        )
    }

    /// Register with an explicit burn-collective configuration (its `num_devices` must be
    /// `world` for local mode).
    pub fn register(
        rank: usize,
        world: usize,
        device: &B::Device,
        config: CollectiveConfig,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(DistError::Plan(format!(
                "rank {rank} is not in 0..{world} (world = number of peers)"
            )));
        }
        let id = PeerId::from(rank);
        burn_collective::register::<B>(id, device.clone(), config).map_err(|e| {
            DistError::Collective {
                op: "register",
                rank,
                detail: format!("{e:?}"),
            }
        })?;
        Ok(Self {
            id,
            rank,
            world,
            finished: false,
            _b: PhantomData,
        })
    }

    /// Unregister this peer (also done on drop).
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        burn_collective::finish_collective::<B>(self.id).map_err(|e| DistError::Collective {
            op: "finish",
            rank: self.rank,
            detail: format!("{e:?}"),
        })
    }

    fn reduce(&mut self, t: Tensor<B, 1>, op: ReduceOperation) -> Result<Tensor<B, 1>> {
        let out = burn_collective::all_reduce::<B>(self.id, t.into_primitive().tensor(), op)
            .map_err(|e| DistError::Collective {
                op: "all_reduce",
                rank: self.rank,
                detail: format!("{e:?}"),
            })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }
}

impl<B: Backend> Drop for BurnCollective<B> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = burn_collective::finish_collective::<B>(self.id);
        }
    }
}

impl<B: Backend> Collective<B> for BurnCollective<B> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&mut self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        self.reduce(t, ReduceOperation::Mean)
    }

    fn all_reduce_sum(&mut self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        self.reduce(t, ReduceOperation::Sum)
    }

    fn broadcast(&mut self, root: usize, t: Option<Tensor<B, 1>>) -> Result<Tensor<B, 1>> {
        if (root == self.rank) != t.is_some() {
            return Err(DistError::Plan(format!(
                "broadcast from {root}: exactly the root passes its tensor (peer {})",
                self.rank
            )));
        }
        let out = burn_collective::broadcast::<B>(self.id, t.map(|t| t.into_primitive().tensor()))
            .map_err(|e| DistError::Collective {
                op: "broadcast",
                rank: self.rank,
                detail: format!("{e:?}"),
            })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }
}

/// Which peer owns (keeps the optimizer state of, and updates) each parameter: balanced by
/// bytes, deterministic from the paths and sizes alone, so every peer computes the same plan.
/// Whole tensors are assigned (Shampoo's and Muon's matrices stay on one peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    world: usize,
    owner: BTreeMap<String, usize>,
    bytes: Vec<u64>,
}

impl ShardPlan {
    /// Largest tensors first, each to the peer with the fewest bytes so far (lowest rank on
    /// ties); equal sizes in path order. `params` yields `(path, bytes)`.
    pub fn balanced<'a>(
        params: impl IntoIterator<Item = (&'a str, usize)>,
        world: usize,
    ) -> Result<Self> {
        if world == 0 {
            return Err(DistError::Plan("a plan needs at least one peer".into()));
        }
        let mut items: Vec<(&str, usize)> = params.into_iter().collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut bytes = vec![0u64; world];
        let mut owner = BTreeMap::new();
        for (path, b) in items {
            let (rank, _) = bytes
                .iter()
                .enumerate()
                .min_by_key(|&(r, &load)| (load, r))
                .unwrap_or((0, &0));
            // (a repeated path with different sizes is not adjacent after the sort)
            if owner.insert(path.to_string(), rank).is_some() {
                return Err(DistError::Plan(format!("duplicate path `{path}`")));
            }
            bytes[rank] += b as u64;
        }
        Ok(Self {
            world,
            owner,
            bytes,
        })
    }

    /// The owner of `path` (`None` for a path not in the plan).
    pub fn owner(&self, path: &str) -> Option<usize> {
        self.owner.get(path).copied()
    }

    /// Number of peers.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Parameter bytes owned by each peer.
    pub fn bytes_per_peer(&self) -> &[u64] {
        &self.bytes
    }

    /// The paths `rank` owns, in path order.
    pub fn owned(&self, rank: usize) -> impl Iterator<Item = &str> {
        self.owner
            .iter()
            .filter(move |&(_, &r)| r == rank)
            .map(|(p, _)| p.as_str())
    }
}

/// How [`DataParallel::step`] averages the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradReduce {
    /// Every peer broadcasts its gradients and every peer sums them in rank order, then divides
    /// by N: bitwise the same result in every run (N broadcasts of the gradient bytes per
    /// step). The default, because burn-collective 0.21's local all-reduce adds the peers'
    /// tensors in hash-map order, which changes from run to run (1-ulp differences for N > 2).
    #[default]
    RankOrdered,
    /// burn-collective's all-reduce (mean): less traffic, not bitwise reproducible.
    AllReduce,
}

/// A [`MomentOptimizer`] stepping under data parallelism: gradients averaged over the peers,
/// optimizer state replicated or sharded by a [`ShardPlan`].
pub struct DataParallel<B: Backend, C: Collective<B>> {
    opt: MomentOptimizer<B>,
    comm: C,
    plan: Option<ShardPlan>,
    reduce: GradReduce,
    /// Whether the replicas were checked to be identical (on the first step).
    checked: bool,
}

impl<B: Backend, C: Collective<B>> std::fmt::Debug for DataParallel<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.comm.rank())
            .field("world", &self.comm.world())
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl<B: Backend, C: Collective<B>> DataParallel<B, C> {
    /// Every peer keeps the full optimizer state and updates every parameter.
    pub fn replicated(opt: MomentOptimizer<B>, comm: C) -> Self {
        Self {
            opt,
            comm,
            plan: None,
            reduce: GradReduce::default(),
            checked: false,
        }
    }

    /// Each peer keeps the state of, and updates, the parameters `plan` gives it; the new values
    /// are broadcast from their owners.
    pub fn sharded(opt: MomentOptimizer<B>, comm: C, plan: ShardPlan) -> Result<Self> {
        if plan.world() != comm.world() {
            return Err(DistError::Plan(format!(
                "the plan is for {} peers, the collective has {}",
                plan.world(),
                comm.world()
            )));
        }
        Ok(Self {
            opt,
            comm,
            plan: Some(plan),
            reduce: GradReduce::default(),
            checked: false,
        })
    }

    /// Choose how gradients are averaged (default [`GradReduce::RankOrdered`]).
    pub fn with_grad_reduce(mut self, reduce: GradReduce) -> Self {
        self.reduce = reduce;
        self
    }

    /// The wrapped optimizer (its state is this peer's shard when sharded).
    pub fn optimizer(&self) -> &MomentOptimizer<B> {
        &self.opt
    }

    /// This peer's optimizer state bytes (its shard when sharded).
    pub fn state_memory(&self) -> StateMemory {
        self.opt.state_memory()
    }

    /// Whether this peer owns (updates) `path`.
    pub fn owns(&self, path: &str) -> bool {
        self.plan
            .as_ref()
            .is_none_or(|p| p.owner(path) == Some(self.comm.rank()))
    }

    /// Give every peer rank 0's parameter values (one broadcast, all tensors batched; every
    /// peer passes the same paths and shapes). Call it once before training, like
    /// PyTorch's DDP does at construction: peers that initialise their own model (or clone one
    /// whose lazily initialised parameters were not materialised yet) start from different
    /// values, which the first [`DataParallel::step`] refuses.
    pub fn sync_params(&mut self, params: &mut [ParamTensor<B>]) -> Result<()> {
        let rank = self.comm.rank();
        let order = path_order(params);
        if order.is_empty() {
            return Ok(());
        }
        let send = (rank == 0)
            .then(|| Tensor::cat(order.iter().map(|&i| params[i].value.clone()).collect(), 0));
        let got = self.comm.broadcast(0, send)?;
        let total = order.iter().map(|&i| params[i].value.dims()[0]).sum();
        expect_len(&got, total, 0, rank)?;
        if rank != 0 {
            let mut offset = 0;
            for &i in &order {
                let n = params[i].value.dims()[0];
                params[i].value = got.clone().slice(offset..offset + n);
                offset += n;
            }
        }
        Ok(())
    }

    /// [`DataParallel::sync_params`] for a Burn module: every peer gets rank 0's values.
    pub fn sync_module<M, AB>(&mut self, module: M) -> (M, Result<()>)
    where
        M: AutodiffModule<AB>,
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let mut params = module_values::<M, AB>(&module);
        if let Err(e) = self.sync_params(&mut params) {
            return (module, Err(e));
        }
        let (module, set) = set_module_params::<M, AB>(module, params);
        (module, set.map_err(DistError::from))
    }

    /// [`DataParallel::step`] for a Burn module on an autodiff backend `AB` whose inner backend
    /// is `B`: this peer's gradients (of its part of the batch) in, the module with the new
    /// parameters — the same on every peer — out. On error the module comes back unchanged.
    pub fn step_module<M, AB>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
    ) -> (M, Result<StepReport>)
    where
        M: AutodiffModule<AB>,
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let mut params = module_params::<M, AB>(&module, grads);
        let report = match self.step(lr, &mut params) {
            Ok(r) => r,
            Err(e) => return (module, Err(e)),
        };
        let (module, set) = set_module_params::<M, AB>(module, params);
        (module, set.map(|()| report).map_err(DistError::from))
    }

    /// This peer's checkpoint file in `dir` (`shard-<rank>-of-<world>.momentck`; replicated
    /// state is saved by rank 0 only as `replicated.momentck`).
    pub fn checkpoint_path(&self, dir: &Path) -> PathBuf {
        match &self.plan {
            Some(p) => dir.join(format!(
                "shard-{}-of-{}.momentck",
                self.comm.rank(),
                p.world()
            )),
            None => dir.join("replicated.momentck"),
        }
    }

    /// Save this peer's state (its shard, or with replicated state the whole state from rank 0;
    /// other ranks then write nothing). Atomic per file (moment-optim's checkpoint format).
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        if self.plan.is_none() && self.comm.rank() != 0 {
            return Ok(());
        }
        Ok(self
            .opt
            .save_checkpoint(self.checkpoint_path(dir.as_ref()))?)
    }

    /// Load this peer's state saved by [`DataParallel::save_checkpoint`] with the same number
    /// of peers. A directory written by a different number of peers is an error (re-sharding
    /// is not supported: restart from a replicated checkpoint instead), as is a shard holding a
    /// parameter this peer does not own. On error the state is unchanged.
    pub fn load_checkpoint(&mut self, dir: impl AsRef<Path>, device: &B::Device) -> Result<()> {
        let dir = dir.as_ref();
        let path = self.checkpoint_path(dir);
        if self.plan.is_some() && !path.exists() {
            let others: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with("shard-"))
                        .collect()
                })
                .unwrap_or_default();
            return Err(DistError::Plan(format!(
                "no shard {} in {} (found {:?}): sharded checkpoints load only with the number \
                 of peers that wrote them",
                path.display(),
                dir.display(),
                others
            )));
        }
        let mut fresh = self.opt.clone();
        fresh.load_checkpoint(&path, device)?;
        if let Some(plan) = &self.plan {
            let rank = self.comm.rank();
            if let Some(p) = fresh
                .to_record()
                .params
                .iter()
                .map(|r| r.path.clone())
                .find(|p| plan.owner(p) != Some(rank))
            {
                return Err(DistError::Plan(format!(
                    "{} holds `{p}`, which peer {rank} does not own under this plan",
                    path.display()
                )));
            }
        }
        self.opt = fresh;
        Ok(())
    }
}

/// Indices of `params` in path order.
fn path_order<B: Backend>(params: &[ParamTensor<B>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by(|&a, &b| params[a].path.cmp(&params[b].path));
    order
}

/// A broadcast from `root` must have the length this peer expects: peers that pass different
/// parameters get an error here, not a slicing panic.
fn expect_len<B: Backend>(t: &Tensor<B, 1>, n: usize, root: usize, rank: usize) -> Result<()> {
    if t.dims()[0] == n {
        Ok(())
    } else {
        Err(DistError::Plan(format!(
            "peer {rank} expected {n} values from peer {root}, got {}: every peer must pass the \
             same parameters (paths and shapes)",
            t.dims()[0]
        )))
    }
}
