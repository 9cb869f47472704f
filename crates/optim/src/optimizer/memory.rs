//! Exact optimizer-state memory: [`StateMemory`], [`MomentOptimizer::state_memory`].

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;

use super::{MomentOptimizer, ParamState};

/// Exact optimizer-state memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateMemory {
    /// Per parameter, in path order.
    pub params: Vec<ParamMemory>,
    /// Bytes per state kind (`exp_avg`, `exp_avg_sq`, `step`, …) over all parameters.
    pub by_kind: BTreeMap<String, u64>,
    /// All state bytes.
    pub total_bytes: u64,
    /// Parameter elements that have state.
    pub param_elements: u64,
}

impl StateMemory {
    /// State bytes per parameter element (0 when there is no state yet).
    pub fn bytes_per_param(&self) -> f64 {
        if self.param_elements == 0 {
            0.0
        } else {
            self.total_bytes as f64 / self.param_elements as f64
        }
    }
}

/// State memory of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMemory {
    /// Parameter path.
    pub path: String,
    /// Parameter elements.
    pub elements: u64,
    /// Bytes per state kind.
    pub by_kind: BTreeMap<String, u64>,
    /// All state bytes of this parameter.
    pub total_bytes: u64,
}

impl<B: Backend> MomentOptimizer<B> {
    /// Exact bytes of optimizer state, per parameter and per state kind.
    pub fn state_memory(&self) -> StateMemory {
        let mut mem = StateMemory::default();
        for (path, ps) in &self.params {
            let pm = param_memory(path, ps);
            for (k, v) in &pm.by_kind {
                *mem.by_kind.entry(k.clone()).or_default() += v;
            }
            mem.total_bytes += pm.total_bytes;
            mem.param_elements += pm.elements;
            mem.params.push(pm);
        }
        // Group-level state: host counters and scalars, 8 bytes each.
        for st in self.group_states.iter().flatten() {
            let names = st.counters.iter().map(|(n, _)| n);
            for name in names.chain(st.scalars.iter().map(|(n, _)| n)) {
                *mem.by_kind.entry(name.to_string()).or_default() += 8;
                mem.total_bytes += 8;
            }
        }
        mem
    }
}

/// The state memory of one parameter: its tensors and codes as stored, 8 bytes per counter
/// and scalar.
fn param_memory<B: Backend>(path: &str, ps: &ParamState<B>) -> ParamMemory {
    let mut pm = ParamMemory {
        path: path.to_string(),
        elements: ps.shape.iter().product::<usize>() as u64,
        by_kind: BTreeMap::new(),
        total_bytes: 0,
    };
    for st in &ps.states {
        for t in &st.tensors {
            *pm.by_kind.entry(t.name.to_string()).or_default() += t.bytes();
        }
        for c in &st.codes {
            *pm.by_kind.entry(c.name.to_string()).or_default() += c.bytes();
        }
        for (name, _) in &st.counters {
            *pm.by_kind.entry(name.to_string()).or_default() += 8;
        }
        for (name, _) in &st.scalars {
            *pm.by_kind.entry(name.to_string()).or_default() += 8;
        }
    }
    pm.total_bytes = pm.by_kind.values().sum();
    pm
}
