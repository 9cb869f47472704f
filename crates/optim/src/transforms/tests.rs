//! Every stateful transform's `init` state fits the view its `update` takes (the view, its
//! naming and its optional tensors chosen as the transform chooses them), for shapes of rank
//! 0–3 with empty dims; and no spoiled state does — an entry renamed, missing, doubled or
//! extra (`state_view::spoiled`) — so the views' checks cannot pass vacuously.

use burn::backend::NdArray;
use proptest::prelude::*;

use super::adafactor::{AdafactorFactoredState, AdafactorFullState, factored_dims};
use super::adam::AdamState;
use super::adam_mini::AdamMiniState;
use super::adam8bit::{Adam8bitState, Adam32bitState};
use super::ademamix::AdemamixState;
use super::came::{CameFactoredState, CameVectorState};
use super::lamb::{LambMomentsState, TrustRatioState};
use super::lion::LionState;
use super::mars::MarsState;
use super::muon::MuonState;
use super::prodigy::{ProdigyGroupState, ProdigyState};
use super::schedule_free::ScheduleFreeState;
use super::shampoo::{ShampooHeavyState, ShampooLerpState};
use super::soap::{SoapState, factor_names};
use super::sophia::SophiaState;
use super::*;
use crate::optimizers::ShampooConfig;
use crate::state_view::{Layout, spoiled};
use crate::transform::{Transform, TransformState};

type B = NdArray;
type Fits = Box<dyn Fn(&[usize], &mut TransformState<B>) -> bool>;

/// A stateful transform at a path, and whether a state of a parameter of some shape fits.
struct Case {
    name: &'static str,
    path: &'static str,
    transform: Box<dyn Transform<B>>,
    fits: Fits,
}

fn case(
    name: &'static str,
    path: &'static str,
    transform: impl Transform<B> + 'static,
    fits: impl Fn(&[usize], &mut TransformState<B>) -> bool + 'static,
) -> Case {
    Case {
        name,
        path,
        transform: Box::new(transform),
        fits: Box::new(fits),
    }
}

/// The naming `st` fits `layout` under, if any (views accept any naming).
fn naming(layout: &Layout, st: &TransformState<B>, run: &[&str]) -> Option<usize> {
    layout.fit(st, run).map(|f| f.naming)
}

fn adam_cases() -> Vec<Case> {
    let adam = |amsgrad| {
        move |_: &[usize], st: &mut TransformState<B>| {
            AdamState::try_view(st).is_some_and(|s| s.max_exp_avg_sq.is_some() == amsgrad)
        }
    };
    let adafactor = |convention, beta1: Option<f64>| ScaleByAdafactor {
        convention,
        eps1: 1e-30,
        eps2: 1e-3,
        clip_threshold: 1.0,
        decay_rate: -0.8,
        beta1,
        weight_decay: 0.0,
        scale_parameter: true,
        relative_step: true,
        warmup_init: false,
    };
    let adafactor_fits = |t: ScaleByAdafactor| {
        let want = usize::from(t.convention == AdafactorConvention::Torch);
        move |shape: &[usize], st: &mut TransformState<B>| match factored_dims(shape) {
            Some(_) => {
                naming(&AdafactorFactoredState::<B>::LAYOUT, st, &[]) == Some(want)
                    && AdafactorFactoredState::try_view(st)
                        .is_some_and(|s| s.exp_avg.is_some() == t.beta1.is_some())
            }
            None => {
                naming(&AdafactorFullState::<B>::LAYOUT, st, &[]) == Some(want)
                    && AdafactorFullState::try_view(st)
                        .is_some_and(|s| s.exp_avg.is_some() == t.beta1.is_some())
            }
        }
    };
    let hf = adafactor(AdafactorConvention::Transformers, Some(0.9));
    let torch = adafactor(AdafactorConvention::Torch, None);
    let adam8 = ScaleByAdam8bit {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        min_8bit_size: 4,
        block_size: 4,
        kernel: BnbKernel::Cuda,
    };
    let mini = ScaleByAdamMini {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        num_heads: 2,
        num_query_groups: 2,
        num_embeds: None,
    };
    let mini_fits = move |path: &'static str| {
        let want = usize::from(mini.blocks(path) != MiniBlocks::Elementwise);
        move |_: &[usize], st: &mut TransformState<B>| {
            naming(&AdamMiniState::<B>::LAYOUT, st, &[]) == Some(want)
                && AdamMiniState::try_view(st).is_some()
        }
    };
    vec![
        case(
            "adam",
            "w",
            scale_by_adam(0.9, 0.999, 1e-8, false),
            adam(false),
        ),
        case(
            "amsgrad",
            "w",
            scale_by_adam(0.9, 0.999, 1e-8, true),
            adam(true),
        ),
        case("adafactor (HF, β1)", "w", hf, adafactor_fits(hf)),
        case("adafactor (torch)", "w", torch, adafactor_fits(torch)),
        case("adam8bit", "w", adam8, move |shape, st| {
            if shape.iter().product::<usize>() >= adam8.min_8bit_size {
                Adam8bitState::try_view(st).is_some()
            } else {
                Adam32bitState::try_view(st).is_some()
            }
        }),
        case(
            "adam-mini (per element)",
            "embed.weight",
            mini,
            mini_fits("embed.weight"),
        ),
        case(
            "adam-mini (heads)",
            "q_proj.weight",
            mini,
            mini_fits("q_proj.weight"),
        ),
        case(
            "adam-mini (tensor)",
            "mlp.weight",
            mini,
            mini_fits("mlp.weight"),
        ),
    ]
}

fn moment_cases() -> Vec<Case> {
    let ademamix = ScaleByAdemamix {
        beta1: 0.9,
        beta2: 0.999,
        beta3: 0.9999,
        alpha: 5.0,
        eps: 1e-8,
        warmup: None,
    };
    let came = ScaleByCame {
        beta1: 0.9,
        beta2: 0.999,
        beta3: 0.9999,
        eps1: 1e-30,
        eps2: 1e-16,
        clip_threshold: 1.0,
    };
    let lamb = ScaleByLambMoments {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        bias_correction: true,
        grad_averaging: true,
    };
    let trust = ScaleByTrustRatio {
        max_weight_norm: Some(10.0),
        eps: 1e-6,
        decay_before_norm: 0.0,
        step_bias_correction: None,
        adapt: true,
    };
    let mars = ScaleByMars {
        betas: (0.95, 0.99),
        gamma: 0.025,
        eps: 1e-8,
        weight_decay: 0.0,
        lr_1d_ratio: 1.0,
        betas_1d: (0.9, 0.95),
        weight_decay_1d: 0.0,
    };
    let muon = ScaleByMuon {
        momentum: 0.95,
        nesterov: true,
        ns_coefficients: (3.4445, -4.775, 2.0315),
        ns_steps: 5,
        eps: 1e-7,
        precision: NsPrecision::F32,
        scale: MuonScale::Original,
    };
    let schedule_free = ScaleByScheduleFree {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        warmup_steps: 0,
        r: 0.0,
        weight_lr_power: 2.0,
    };
    let sophia = |variant| ScaleBySophia {
        variant,
        beta1: 0.965,
        beta2: 0.99,
        rho: 0.04,
        eps: 1e-15,
    };
    let sophia_fits = |want: usize| {
        move |_: &[usize], st: &mut TransformState<B>| {
            naming(&SophiaState::<B>::LAYOUT, st, &[]) == Some(want)
                && SophiaState::try_view(st).is_some()
        }
    };
    vec![
        case("ademamix", "w", ademamix, |_, st| {
            AdemamixState::try_view(st).is_some()
        }),
        case("came", "w", came, |shape, st| match factored_dims(shape) {
            Some(_) => CameFactoredState::try_view(st).is_some(),
            None => CameVectorState::try_view(st).is_some(),
        }),
        case("lamb", "w", lamb, |_, st| {
            LambMomentsState::try_view(st).is_some()
        }),
        case("trust ratio", "w", trust, |_, st| {
            TrustRatioState::try_view(st).is_some()
        }),
        case(
            "lion",
            "w",
            ScaleByLion {
                beta1: 0.9,
                beta2: 0.99,
            },
            |_, st| LionState::try_view(st).is_some(),
        ),
        case("mars", "w", mars, |_, st| MarsState::try_view(st).is_some()),
        case("muon", "w", muon, |_, st| MuonState::try_view(st).is_some()),
        case("schedule-free", "w", schedule_free, |_, st| {
            ScheduleFreeState::try_view(st).is_some()
        }),
        case("sophia-g", "w", sophia(SophiaVariant::G), sophia_fits(0)),
        case("sophia-h", "w", sophia(SophiaVariant::H), sophia_fits(1)),
    ]
}

fn preconditioned_cases() -> Vec<Case> {
    let shampoo_fits = |t: ScaleByShampoo| {
        let graft = matches!(t.graft, Graft::AdaGrad | Graft::RmsProp(_) | Graft::Adam(_));
        move |shape: &[usize], st: &mut TransformState<B>| {
            let names = t.preconditioner_names(&t.layout(shape));
            match t.momentum {
                ShampooMomentum::LerpPrevious(_) => ShampooLerpState::try_view(st, &names)
                    .is_some_and(|s| s.graft_statistics.is_some() == graft),
                ShampooMomentum::Heavy { .. } => ShampooHeavyState::try_view(st, &names)
                    .is_some_and(|s| s.graft_statistics.is_some() == graft),
            }
        }
    };
    let gupta = ShampooConfig::gupta().shampoo;
    let gupta_grafted = ScaleByShampoo {
        graft: Graft::AdaGrad,
        block_size: Some(2),
        momentum: ShampooMomentum::LerpPrevious(0.5),
        ..gupta
    };
    let scalable = ScaleByShampoo {
        block_size: Some(2),
        graft: Graft::RmsProp(0.99),
        ..ShampooConfig::scalable().shampoo
    };
    let soap = |precondition_1d, merge_dims| ScaleBySoap {
        betas: (0.95, 0.95),
        shampoo_beta: 0.95,
        eps: 1e-8,
        weight_decay: 0.0,
        precondition_frequency: 10,
        max_precondition_dim: 3,
        merge_dims,
        precondition_1d,
        correct_bias: true,
        normalize_gradient: false,
    };
    let soap_fits = |t: ScaleBySoap| {
        move |shape: &[usize], st: &mut TransformState<B>| {
            let (_, on) = t.layout(shape);
            SoapState::try_view(st, &factor_names(&on)).is_some()
        }
    };
    let prodigy = ScaleByProdigy {
        betas: (0.9, 0.999),
        beta3: None,
        d0: 1e-6,
        d_coef: 1.0,
        growth_rate: f64::INFINITY,
        decay: ProdigyDecay::Decoupled(0.0),
        bias_correction: false,
        safeguard_warmup: false,
        eps: Some(1e-8),
        maximize: false,
    };
    vec![
        case("shampoo (gupta)", "w", gupta, shampoo_fits(gupta)),
        case(
            "shampoo (AdaGrad graft, blocks)",
            "w",
            gupta_grafted,
            shampoo_fits(gupta_grafted),
        ),
        case("shampoo (scalable)", "w", scalable, shampoo_fits(scalable)),
        case(
            "soap",
            "w",
            soap(false, false),
            soap_fits(soap(false, false)),
        ),
        case(
            "soap (1-d, merged)",
            "w",
            soap(true, true),
            soap_fits(soap(true, true)),
        ),
        case("prodigy", "w", prodigy, |_, st| {
            ProdigyState::try_view(st).is_some()
        }),
    ]
}

fn cases() -> Vec<Case> {
    let mut all = adam_cases();
    all.extend(moment_cases());
    all.extend(preconditioned_cases());
    all
}

/// `init`'s state for `shape` fits; no spoiled one does. Whether `init` accepted the shape.
fn check(case: &Case, shape: &[usize]) -> Result<bool, TestCaseError> {
    let Ok(st) = case.transform.init(case.path, shape, &Default::default()) else {
        return Ok(false);
    };
    prop_assert!(
        (case.fits)(shape, &mut st.clone()),
        "{}: the state of {:?} does not fit",
        case.name,
        shape
    );
    for (what, mut bad) in spoiled(&st) {
        prop_assert!(
            !(case.fits)(shape, &mut bad),
            "{}: a state of {:?} with {} fits",
            case.name,
            shape,
            what
        );
    }
    Ok(true)
}

#[test]
fn every_stateful_transform_has_a_case_whose_init_states_fit() {
    let shapes: [&[usize]; 5] = [&[], &[4], &[2, 3], &[3, 4], &[2, 2, 3]];
    for case in cases() {
        assert!(case.transform.stateful(), "{}", case.name);
        let mut inits = 0;
        for shape in shapes {
            inits += usize::from(check(&case, shape).unwrap());
        }
        assert!(inits > 0, "{}: init refused every shape", case.name);
    }
}

#[test]
fn prodigy_group_state_fits_its_view_and_spoiled_ones_do_not() {
    let prodigy = ScaleByProdigy {
        betas: (0.9, 0.999),
        beta3: None,
        d0: 1e-6,
        d_coef: 1.0,
        growth_rate: f64::INFINITY,
        decay: ProdigyDecay::Fixed(0.0),
        bias_correction: true,
        safeguard_warmup: true,
        eps: None,
        maximize: false,
    };
    let mut st: TransformState<B> = prodigy.init_group();
    assert_eq!(*ProdigyGroupState::view(&mut st).d, 1e-6);
    assert!(ProdigyGroupState::try_read(&st).is_some());
    for (what, bad) in spoiled(&st) {
        assert!(ProdigyGroupState::try_read(&bad).is_none(), "{what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn init_states_fit_their_views_and_spoiled_ones_do_not(
        shape in prop::collection::vec(0usize..5, 0..4),
    ) {
        for case in cases() {
            check(&case, &shape)?;
        }
    }
}
