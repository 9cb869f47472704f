//! Saving and loading the engine's state as versioned, backend-independent
//! [`OptimizerRecord`]s (exact `f32` values and `u8` codes).

use std::collections::BTreeMap;

use burn::tensor::{Tensor, backend::Backend};

use super::{MomentOptimizer, ParamGroup, ParamState};
use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::record::{
    CodeRecord, GroupRecord, MIN_RECORD_VERSION, OptimizerRecord, ParamRecord, RECORD_VERSION,
    TensorRecord, TransformRecord,
};
use crate::stats::{code_values, tensor_values};
use crate::transform::TransformState;

impl<B: Backend> MomentOptimizer<B> {
    /// The full state as a versioned, backend-independent record (reads tensors back).
    pub fn to_record(&self) -> OptimizerRecord {
        let mut params: BTreeMap<String, ParamRecord> = self.pending.clone();
        for (path, ps) in &self.params {
            let group = &self.groups[ps.group];
            let transforms = group
                .chain
                .transforms()
                .iter()
                .zip(&ps.states)
                .filter(|(t, _)| t.stateful())
                .map(|(t, st)| transform_record(t.name(), st))
                .collect();
            params.insert(
                path.clone(),
                ParamRecord {
                    path: path.clone(),
                    group: group.name.clone(),
                    shape: ps.shape.clone(),
                    transforms,
                },
            );
        }
        OptimizerRecord {
            version: RECORD_VERSION,
            steps: self.steps,
            params: params.into_values().collect(),
            groups: self.group_records(),
        }
    }

    /// The group-level states of the chains that have a group phase, as records.
    fn group_records(&self) -> Vec<GroupRecord> {
        self.groups
            .iter()
            .zip(&self.group_states)
            .filter(|(g, _)| g.chain.has_group_phase())
            .map(|(g, states)| GroupRecord {
                name: g.name.clone(),
                transforms: g
                    .chain
                    .transforms()
                    .iter()
                    .zip(states)
                    .filter(|(t, _)| t.group_sums() > 0)
                    .map(|(t, st)| transform_record(t.name(), st))
                    .collect(),
            })
            .collect()
    }

    /// The group states a record holds, checked against this optimizer's chains; fresh
    /// states for groups the record has no entry for.
    fn restore_group_states(
        &self,
        record: &OptimizerRecord,
    ) -> Result<Vec<Vec<TransformState<B>>>> {
        let mut out: Vec<Vec<TransformState<B>>> =
            self.groups.iter().map(|g| g.chain.init_group()).collect();
        for gr in &record.groups {
            let gi = self.group_index(&gr.name)?;
            restore_group_record(&self.groups[gi].chain, gr, &mut out[gi])?;
        }
        self.check_group_records_present(record)?;
        Ok(out)
    }

    /// A group that keeps group-level state and has parameters in `record` must have its
    /// group record there too.
    fn check_group_records_present(&self, record: &OptimizerRecord) -> Result<()> {
        for g in &self.groups {
            let has_params = record.params.iter().any(|p| p.group == g.name);
            if g.chain.has_group_phase()
                && has_params
                && !record.groups.iter().any(|r| r.name == g.name)
            {
                return Err(OptimError::RecordMismatch {
                    reason: format!(
                        "group `{}` ({}) keeps group-level state, the record has none for it",
                        g.name,
                        g.chain.label()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Load a record, creating its tensors on `device` now. Everything is checked first
    /// (version, groups, transforms, state names and shapes); on error the current state is
    /// untouched.
    pub fn load_record(&mut self, record: OptimizerRecord, device: &B::Device) -> Result<()> {
        self.check_record(&record)?;
        let group_states = self.restore_group_states(&record)?;
        let mut params = BTreeMap::new();
        for rec in &record.params {
            let group = self.group_index(&rec.group)?;
            let mut states = self.groups[group]
                .chain
                .init(&rec.path, &rec.shape, device)?;
            restore_states(&self.groups[group], rec, &rec.shape, &mut states, device)?;
            params.insert(
                rec.path.clone(),
                ParamState {
                    group,
                    shape: rec.shape.clone(),
                    states,
                },
            );
        }
        self.params = params;
        self.group_states = group_states;
        self.pending.clear();
        self.steps = record.steps;
        Ok(())
    }

    /// Load a record whose tensors are created lazily, on the device of each parameter's next
    /// gradient (burn's `Optimizer::load_record` has no device). Structure is checked now;
    /// values and shapes when each parameter is next stepped.
    pub fn load_record_lazy(&mut self, record: OptimizerRecord) -> Result<()> {
        self.check_record(&record)?;
        self.group_states = self.restore_group_states(&record)?;
        self.params.clear();
        self.pending = record
            .params
            .into_iter()
            .map(|p| (p.path.clone(), p))
            .collect();
        self.steps = record.steps;
        Ok(())
    }

    /// The index of the group called `name` (a record naming another is an error).
    fn group_index(&self, name: &str) -> Result<usize> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| OptimError::RecordMismatch {
                reason: format!("record has parameter group `{name}`, this optimizer has none"),
            })
    }

    /// A record's version is readable, its groups exist, and each parameter was saved by the
    /// stateful transforms of its group's chain.
    fn check_record(&self, record: &OptimizerRecord) -> Result<()> {
        if !(MIN_RECORD_VERSION..=RECORD_VERSION).contains(&record.version) {
            return Err(OptimError::RecordMismatch {
                reason: format!(
                    "record format version {} (this build reads versions {MIN_RECORD_VERSION}..={RECORD_VERSION})",
                    record.version
                ),
            });
        }
        for rec in &record.params {
            let group = &self.groups[self.group_index(&rec.group)?];
            let expected: Vec<&str> = group
                .chain
                .transforms()
                .iter()
                .filter(|t| t.stateful())
                .map(|t| t.name())
                .collect();
            let found: Vec<&str> = rec.transforms.iter().map(|t| t.name.as_str()).collect();
            if expected != found {
                return Err(OptimError::RecordMismatch {
                    reason: format!(
                        "`{}` was saved by transforms {found:?}, group `{}` ({}) has {expected:?}",
                        rec.path,
                        group.name,
                        group.chain.label()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Fill a group's fresh group-level `states` from its record `gr`, checking that the record
/// holds one state per group-reducing transform, with matching names.
fn restore_group_record<B: Backend>(
    chain: &Chain<B>,
    gr: &GroupRecord,
    states: &mut [TransformState<B>],
) -> Result<()> {
    let mut recs = gr.transforms.iter();
    for (t, st) in chain.transforms().iter().zip(states.iter_mut()) {
        if t.group_sums() == 0 {
            continue;
        }
        let mismatch = |what: String| OptimError::RecordMismatch {
            reason: format!("group `{}`: {what}", gr.name),
        };
        let tr = recs
            .next()
            .ok_or_else(|| mismatch(format!("no group state for `{}`", t.name())))?;
        if tr.name != t.name()
            || tr.counters.len() != st.counters.len()
            || tr.scalars.len() != st.scalars.len()
            || tr
                .counters
                .iter()
                .zip(&st.counters)
                .any(|(a, b)| a.0 != b.0)
            || tr.scalars.iter().zip(&st.scalars).any(|(a, b)| a.0 != b.0)
        {
            return Err(mismatch(format!(
                "group state of `{}` does not match transform `{}`",
                tr.name,
                t.name()
            )));
        }
        for (c, r) in st.counters.iter_mut().zip(&tr.counters) {
            c.1 = r.1;
        }
        for (c, r) in st.scalars.iter_mut().zip(&tr.scalars) {
            c.1 = r.1;
        }
    }
    if recs.next().is_some() {
        return Err(OptimError::RecordMismatch {
            reason: format!("group `{}` has more group states than its chain", gr.name),
        });
    }
    Ok(())
}

/// A transform's state as a record (exact values).
fn transform_record<B: Backend>(name: &str, st: &TransformState<B>) -> TransformRecord {
    TransformRecord {
        name: name.to_string(),
        tensors: st
            .tensors
            .iter()
            .map(|s| TensorRecord {
                name: s.name.to_string(),
                shape: s.shape.clone(),
                values: tensor_values(&s.tensor),
            })
            .collect(),
        codes: st
            .codes
            .iter()
            .map(|c| CodeRecord {
                name: c.name.to_string(),
                shape: c.shape.clone(),
                values: code_values(&c.tensor),
            })
            .collect(),
        counters: st
            .counters
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
        scalars: st
            .scalars
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
    }
}

/// Fill freshly initialised `states` from a record, checking names and shapes.
pub(super) fn restore_states<B: Backend>(
    group: &ParamGroup<B>,
    rec: &ParamRecord,
    shape: &[usize],
    states: &mut [TransformState<B>],
    device: &B::Device,
) -> Result<()> {
    let mismatch = |reason: String| OptimError::RecordMismatch {
        reason: format!("`{}`: {reason}", rec.path),
    };
    if rec.shape != shape {
        return Err(OptimError::ShapeMismatch {
            path: rec.path.clone(),
            expected: shape.to_vec(),
            actual: rec.shape.clone(),
        });
    }
    let stateful = group
        .chain
        .transforms()
        .iter()
        .zip(states.iter_mut())
        .filter(|(t, _)| t.stateful());
    let mut recs = rec.transforms.iter();
    for (t, st) in stateful {
        let tr = recs
            .next()
            .ok_or_else(|| mismatch(format!("no state for transform `{}`", t.name())))?;
        if tr.name != t.name()
            || tr.tensors.len() != st.tensors.len()
            || tr.codes.len() != st.codes.len()
            || tr.scalars.len() != st.scalars.len()
            || tr.counters.len() != st.counters.len()
        {
            return Err(mismatch(format!(
                "state of `{}` does not match transform `{}`",
                tr.name,
                t.name()
            )));
        }
        restore_transform_state(tr, st, device, &mismatch)?;
    }
    Ok(())
}

/// Fill one transform's state `st` from its record `tr` (already matched in name and in the
/// number of tensors, codes, counters and scalars), checking every name and shape.
fn restore_transform_state<B: Backend>(
    tr: &TransformRecord,
    st: &mut TransformState<B>,
    device: &B::Device,
    mismatch: &dyn Fn(String) -> OptimError,
) -> Result<()> {
    for (s, r) in st.tensors.iter_mut().zip(&tr.tensors) {
        let n: usize = s.shape.iter().product();
        if r.name != s.name || r.shape != s.shape || r.values.len() != n {
            return Err(mismatch(format!(
                "state tensor `{}` {:?} ({} values) where `{}` {:?} was expected",
                r.name,
                r.shape,
                r.values.len(),
                s.name,
                s.shape
            )));
        }
        s.tensor = Tensor::from_data(burn::tensor::TensorData::new(r.values.clone(), [n]), device);
    }
    for (s, r) in st.codes.iter_mut().zip(&tr.codes) {
        let n: usize = s.shape.iter().product();
        if r.name != s.name || r.shape != s.shape || r.values.len() != n {
            return Err(mismatch(format!(
                "code tensor `{}` {:?} ({} values) where `{}` {:?} was expected",
                r.name,
                r.shape,
                r.values.len(),
                s.name,
                s.shape
            )));
        }
        s.tensor = crate::transform::u8_tensor(r.values.clone(), device);
    }
    for (c, r) in st.counters.iter_mut().zip(&tr.counters) {
        if r.0 != c.0 {
            return Err(mismatch(format!(
                "counter `{}` where `{}` was expected",
                r.0, c.0
            )));
        }
        c.1 = r.1;
    }
    for (c, r) in st.scalars.iter_mut().zip(&tr.scalars) {
        if r.0 != c.0 {
            return Err(mismatch(format!(
                "scalar `{}` where `{}` was expected",
                r.0, c.0
            )));
        }
        c.1 = r.1;
    }
    Ok(())
}
