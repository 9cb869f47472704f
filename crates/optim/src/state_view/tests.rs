//! Unit tests of `state_view!` and its layouts.

use burn::backend::NdArray;

use super::{Fresh, FreshCodes};
use crate::transform::{StateTensor, TransformState};

type B = NdArray;

crate::state_view! {
    /// Every kind, two namings.
    #[allow(dead_code, reason = "not every field is read here")]
    struct Everything {
        counters { step, failures = "root_failures" }
        scalars { lr_max, weight_sum }
        tensors { exp_avg = "exp_avg" | "momentum", exp_avg_sq }
        optional tensors { max_exp_avg_sq, extra = "ex.tra" }
        codes { state1 }
    }
}

crate::state_view! {
    /// A leading run.
    #[allow(dead_code, reason = "not every field is read here")]
    struct Leading {
        counters { step }
        leading tensors { blocks }
        tensors { momentum_buffer }
        optional tensors { graft_statistics = "graft.statistics" }
    }
}

crate::state_view! {
    /// A trailing run.
    #[allow(dead_code, reason = "not every field is read here")]
    struct Trailing {
        tensors { exp_avg }
        trailing tensors { factors }
    }
}

crate::state_view! {
    /// Host entries only.
    #[allow(dead_code, reason = "not every field is read here")]
    struct Host {
        counters { step, skipped }
        scalars { d }
    }
}

fn dev() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

fn everything(naming: usize, optional: bool) -> TransformState<B> {
    let z = || Fresh::<B>::zeros(&[2, 3], &dev());
    Everything::init_named(
        naming,
        [-1.0, 0.0],
        [z(), z()],
        optional.then(|| [z(), Fresh::zeros(&[], &dev())]),
        [FreshCodes::filled(&[2, 3], 7, &dev())],
    )
}

fn run(names: &[&'static str]) -> Vec<StateTensor<B>> {
    names
        .iter()
        .map(|&n| StateTensor::zeros(n, &[2], &dev()))
        .collect()
}

#[test]
fn init_builds_the_declared_layout_under_each_naming() {
    let st = everything(1, true);
    let names: Vec<_> = st.tensors.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        ["momentum", "exp_avg_sq", "max_exp_avg_sq", "ex.tra"]
    );
    assert_eq!(st.counters, [("step", 0), ("root_failures", 0)]);
    assert_eq!(st.scalars, [("lr_max", -1.0), ("weight_sum", 0.0)]);
    assert_eq!(st.codes[0].name, "state1");
    assert_eq!(st.tensors[3].shape, Vec::<usize>::new());
    assert_eq!(Everything::<B>::LAYOUT.namings(), 2);
    assert_eq!(everything(0, false).tensors.len(), 2);
}

#[test]
fn views_read_and_write_the_named_entries() {
    let mut st = everything(0, true);
    let s = Everything::view(&mut st);
    *s.step = 3;
    *s.failures += 1;
    *s.weight_sum = 2.5;
    *s.exp_avg_sq = s.exp_avg_sq.clone().add_scalar(1.0);
    assert!(s.max_exp_avg_sq.is_some() && s.extra.is_some());
    assert_eq!(st.counters, [("step", 3), ("root_failures", 1)]);
    assert_eq!(st.scalars[1], ("weight_sum", 2.5));
    let r = Everything::read(&st);
    assert_eq!((*r.step, *r.lr_max), (3, -1.0));
    let v = crate::stats::tensor_values(r.exp_avg_sq);
    assert_eq!(v, vec![1.0; 6]);

    let mut st = everything(1, false);
    let s = Everything::try_view(&mut st).expect("fits");
    assert!(s.max_exp_avg_sq.is_none() && s.extra.is_none());
}

#[test]
fn runs_are_checked_by_their_expected_names() {
    let mut st = Leading::init(
        run(&["pre_cond_0", "inv_pre_cond_0"]),
        [Fresh::zeros(&[2], &dev())],
        None,
    );
    let names = ["pre_cond_0", "inv_pre_cond_0"];
    let s = Leading::view(&mut st, &names);
    assert_eq!(s.blocks.len(), 2);
    assert!(s.graft_statistics.is_none());
    assert!(Leading::try_view(&mut st, &names[..1]).is_none());
    assert!(Leading::try_view(&mut st, &["pre_cond_0", "inv_pre_cond_1"]).is_none());
    assert!(Leading::try_read(&st, &[]).is_none());

    let mut st = Trailing::init([Fresh::zeros(&[2], &dev())], run(&["GG.1", "Q.1"]));
    assert_eq!(Trailing::view(&mut st, &["GG.1", "Q.1"]).factors.len(), 2);
    assert!(Trailing::try_read(&st, &["GG.0", "Q.0"]).is_none());
    assert!(Trailing::try_read(&st, &["GG.1", "Q.1", "GG.2"]).is_none());

    let mut st = Host::<B>::init([1.0]);
    assert_eq!(*Host::view(&mut st).d, 1.0);
    assert!(st.tensors.is_empty());
}

#[test]
fn views_reject_every_spoiled_state() {
    for (naming, optional) in [(0, false), (0, true), (1, false), (1, true)] {
        let mut st = everything(naming, optional);
        assert!(Everything::try_view(&mut st).is_some());
        for (what, mut bad) in super::spoiled(&st) {
            assert!(Everything::try_view(&mut bad).is_none(), "{what}");
            assert!(Everything::try_read(&bad).is_none(), "{what}");
        }
    }
    // Names from two namings at once.
    let mut st = everything(1, false);
    st.tensors[1].name = "exp_avg_sq";
    st.tensors[0].name = "exp_avg";
    assert!(Everything::try_view(&mut st).is_some());
    let mut st = everything(0, false);
    st.counters[1].0 = "failures";
    assert!(Everything::try_view(&mut st).is_none());
}

#[test]
#[should_panic(expected = "state view `Host`")]
fn view_panics_naming_the_view_and_its_invariant() {
    let mut st = TransformState::<B>::empty();
    let _ = Host::view(&mut st);
}
