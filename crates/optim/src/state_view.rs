//! Typed, named views of a [`TransformState`]: each transform family declares its state's
//! layout once, with [`state_view!`](macro@crate::state_view), and reads and writes its state
//! through named fields (`*s.step`, `s.exp_avg`) instead of positions (`tensors[1]`).
//!
//! A [`TransformState`] keeps named entries in the order its transform's `init` made them
//! (that order and those names are the record format). A view checks the names of every entry
//! — counters, scalars, float tensors, code tensors, each kind in order — and their counts,
//! once, and then hands out one reference per entry:
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::backend::Backend;
//! use moment_optim::TransformState;
//! use moment_optim::state_view::Fresh;
//!
//! moment_optim::state_view! {
//!     /// Adam's state (torch's names).
//!     pub struct AdamState {
//!         counters { step }
//!         tensors { exp_avg, exp_avg_sq }
//!         optional tensors { max_exp_avg_sq }
//!     }
//! }
//!
//! fn init<B: Backend>(shape: &[usize], amsgrad: bool, device: &B::Device) -> TransformState<B> {
//!     let zeros = || Fresh::zeros(shape, device);
//!     AdamState::init([zeros(), zeros()], amsgrad.then(|| [zeros()]))
//! }
//!
//! let mut st = init::<NdArray>(&[2, 3], false, &Default::default());
//! let s = AdamState::view(&mut st);
//! *s.step += 1;
//! *s.exp_avg = s.exp_avg.clone().add_scalar(1.0);
//! assert!(s.max_exp_avg_sq.is_none());
//! assert_eq!(st.counters, [("step", 1)]);
//! assert_eq!(st.tensors[1].name, "exp_avg_sq");
//! ```
//!
//! # The declaration
//!
//! ```text
//! state_view! {
//!     /// docs
//!     VIS struct NAME {
//!         counters { ENTRY, … }            // u64                 → &'a mut u64
//!         scalars { ENTRY, … }             // host f64            → &'a mut f64
//!         leading tensors { FIELD }        // a run of tensors    → &'a mut [StateTensor<B>]
//!         tensors { ENTRY, … }             // f32 tensors         → &'a mut Tensor<B, 1>
//!         optional tensors { ENTRY, … }    // all or none         → Option<&'a mut Tensor<B, 1>>
//!         trailing tensors { FIELD }       // a run of tensors    → &'a mut [StateTensor<B>]
//!         codes { ENTRY, … }               // u8 code tensors     → &'a mut Tensor<B, 1, Int>
//!     }
//! }
//! ```
//!
//! Every section may be left out, but those present come in this order. An `ENTRY` is a
//! field named like its state entry (`exp_avg`), a field and the entry's name
//! (`graft_statistics = "graft.statistics"`), or a field and one name per *naming*
//! (`exp_avg = "exp_avg" | "momentum"`): a family whose references name the same layout
//! differently (Sophia-G/H, Adafactor's two conventions) declares it once, with one name per
//! naming where they differ; a state fits when all its names come from the same naming.
//! Optional tensors follow the fixed ones and are present or absent together. A *leading* or
//! *trailing* run (at most one per view) holds tensors whose number and names depend on the
//! parameter (Shampoo's per-block preconditioners, SOAP's per-axis factors): the view takes
//! their expected names when it is made, and checks them like the others. Which naming, and
//! whether the optional tensors are there, is the transform's choice in `init` (from its
//! configuration); a view accepts either, and [`Layout::fit`] tells which it found.
//!
//! # What it generates
//!
//! `NAME<'a, B, A = Mut>`, a struct with one public field per entry (`A` = [`Shared`]: the
//! same fields as `&'a` references), and:
//!
//! * `NAME::try_view(&mut state) -> Option<NAME>`: the check, then the view; never panics
//!   (what fused steps use, falling back to the composed path on `None`). With a leading or
//!   trailing run it takes that run's expected names too: `try_view(&mut state, &names)`.
//! * `NAME::view(&mut state) -> NAME`: for `Transform::update` and friends, where the state
//!   fits by the engine's invariant — every state comes from the transform's own `init`, or
//!   from a record checked name by name and shape by shape against `init` — so a state that
//!   does not fit is a bug in the transform, and panics saying so.
//! * `NAME::try_read(&state)` / `NAME::read(&state)`: the same with shared references (e.g.
//!   `StepCtx::group`, `Transform::eval_view`).
//! * `NAME::LAYOUT`: the declared [`Layout`] (every name, per kind and naming).
//! * `NAME::init(...)` / `NAME::init_named(naming, ...)`: a fresh state of this layout, so
//!   that `init` writes no name: arguments, for the sections present, in declaration order —
//!   `scalars: [f64; N]`, the leading run (`Vec<StateTensor<B>>`, named by the caller),
//!   `tensors: [Fresh<B>; N]`, `optional: Option<[Fresh<B>; N]>`, the trailing run,
//!   `codes: [FreshCodes<B>; N]`. Counters start at 0.
//!
//! The macro is exported (`moment_optim::state_view!`) for users' own transforms.

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::transform::{CodeTensor, StateTensor, TransformState, u8_tensor};

/// What [`state_view!`](macro@crate::state_view)'s expansion names, reachable through `$crate`.
#[doc(hidden)]
pub mod __private {
    pub use burn::tensor::{Int, Tensor, backend::Backend};
    pub use std::marker::PhantomData;
}

/// How a view holds its entries: [`Mut`] (`&'a mut T`, the default) or [`Shared`] (`&'a T`).
pub trait Access<'a> {
    /// A reference to `T` of this kind.
    type Ref<T: ?Sized + 'a>;
}

/// Exclusive access: a view's fields are `&'a mut T` (`try_view`, `view`).
#[derive(Debug, Clone, Copy)]
pub enum Mut {}

/// Shared access: a view's fields are `&'a T` (`try_read`, `read`).
#[derive(Debug, Clone, Copy)]
pub enum Shared {}

impl<'a> Access<'a> for Mut {
    type Ref<T: ?Sized + 'a> = &'a mut T;
}

impl<'a> Access<'a> for Shared {
    type Ref<T: ?Sized + 'a> = &'a T;
}

/// One entry's name: a single name, or one per naming.
pub type Names = &'static [&'static str];

/// The entries of one kind, in order.
pub type Entries = &'static [Names];

/// A view's declared layout: the names of its entries, per kind, in order.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The view's name, for messages.
    pub view: &'static str,
    /// Counters.
    pub counters: Entries,
    /// Host scalars.
    pub scalars: Entries,
    /// Whether a run of tensors with names known at run time leads the tensors.
    pub leading: bool,
    /// Fixed float tensors.
    pub tensors: Entries,
    /// Optional float tensors, after the fixed ones, all present or all absent.
    pub optional: Entries,
    /// Whether a run of tensors with names known at run time ends the tensors.
    pub trailing: bool,
    /// Code tensors.
    pub codes: Entries,
}

/// How a state fits a [`Layout`]: which naming, whether the optional tensors are present,
/// and how many tensors the leading run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// The naming all names came from.
    pub naming: usize,
    /// The optional tensors are present.
    pub optional: bool,
    /// Tensors before the fixed ones (the leading run).
    pub leading: usize,
}

/// A fresh float state tensor: its logical shape and values, named by the view's `init`.
#[derive(Debug, Clone)]
pub struct Fresh<B: Backend> {
    shape: Vec<usize>,
    tensor: Tensor<B, 1>,
}

impl<B: Backend> Fresh<B> {
    /// Zeros of `shape`.
    pub fn zeros(shape: &[usize], device: &B::Device) -> Self {
        let n = shape.iter().product::<usize>();
        Self::new(shape, Tensor::zeros([n], device))
    }

    /// `tensor` (flat, row-major) as a state tensor of `shape`.
    pub fn new(shape: &[usize], tensor: Tensor<B, 1>) -> Self {
        Self {
            shape: shape.to_vec(),
            tensor,
        }
    }

    fn named(self, name: &'static str) -> StateTensor<B> {
        StateTensor {
            name,
            shape: self.shape,
            tensor: self.tensor,
        }
    }
}

/// A fresh code tensor: its logical shape and `u8` codes, named by the view's `init`.
#[derive(Debug, Clone)]
pub struct FreshCodes<B: Backend> {
    shape: Vec<usize>,
    tensor: Tensor<B, 1, Int>,
}

impl<B: Backend> FreshCodes<B> {
    /// Codes of `shape`, all equal to `code`.
    pub fn filled(shape: &[usize], code: u8, device: &B::Device) -> Self {
        let n = shape.iter().product::<usize>();
        Self {
            shape: shape.to_vec(),
            tensor: u8_tensor(vec![code; n], device),
        }
    }

    fn named(self, name: &'static str) -> CodeTensor<B> {
        CodeTensor {
            name,
            shape: self.shape,
            tensor: self.tensor,
        }
    }
}

/// The parts of a fresh state, in a view's declaration order (see [`Layout::build`]).
#[derive(Debug)]
pub struct Parts<B: Backend> {
    /// Initial values of the scalars.
    pub scalars: Vec<f64>,
    /// The leading run, named.
    pub leading: Vec<StateTensor<B>>,
    /// The fixed tensors.
    pub tensors: Vec<Fresh<B>>,
    /// The optional tensors, if present.
    pub optional: Option<Vec<Fresh<B>>>,
    /// The trailing run, named.
    pub trailing: Vec<StateTensor<B>>,
    /// The code tensors.
    pub codes: Vec<FreshCodes<B>>,
}

impl<B: Backend> Default for Parts<B> {
    fn default() -> Self {
        Self {
            scalars: Vec::new(),
            leading: Vec::new(),
            tensors: Vec::new(),
            optional: None,
            trailing: Vec::new(),
            codes: Vec::new(),
        }
    }
}

/// Every entry has one name or `namings` names.
const fn names_agree(entries: Entries, namings: usize) -> bool {
    let mut i = 0;
    while i < entries.len() {
        let n = entries[i].len();
        if n == 0 || (n != 1 && n != namings) {
            return false;
        }
        i += 1;
    }
    true
}

/// The most names any entry has.
const fn most_names(entries: Entries, at_least: usize) -> usize {
    let mut most = at_least;
    let mut i = 0;
    while i < entries.len() {
        if entries[i].len() > most {
            most = entries[i].len();
        }
        i += 1;
    }
    most
}

impl Layout {
    /// How many namings the layout has (1 unless an entry lists one name per naming).
    pub const fn namings(&self) -> usize {
        let n = most_names(self.counters, 1);
        let n = most_names(self.scalars, n);
        let n = most_names(self.tensors, n);
        let n = most_names(self.optional, n);
        most_names(self.codes, n)
    }

    /// The layout, after checking (at compile time, where the macro uses it) that every
    /// entry has one name or one per naming and that at most one run has run-time names.
    pub const fn checked(self) -> Self {
        let n = self.namings();
        assert!(
            names_agree(self.counters, n)
                && names_agree(self.scalars, n)
                && names_agree(self.tensors, n)
                && names_agree(self.optional, n)
                && names_agree(self.codes, n),
            "state_view!: every entry has one name, or one per naming (the same number for all)"
        );
        assert!(
            !(self.leading && self.trailing),
            "state_view!: a view has at most one run of tensors named at run time"
        );
        self
    }

    /// An entry's name under `naming` (its only name, if it has one).
    pub fn name(entry: Names, naming: usize) -> &'static str {
        match entry {
            [only] => only,
            _ => entry.get(naming).or(entry.first()).copied().unwrap_or(""),
        }
    }

    /// The entries' names under `naming` (as `&'n str`, to compare with shorter-lived names).
    fn names<'n>(entries: Entries, naming: usize) -> impl Iterator<Item = &'n str> {
        entries
            .iter()
            .map(move |e| -> &'n str { Self::name(e, naming) })
    }

    /// How `st` fits this layout, given the names the leading or trailing run must have
    /// (`variable`; empty for a view without one), or `None`.
    pub fn fit<B: Backend>(&self, st: &TransformState<B>, variable: &[&str]) -> Option<Fit> {
        let has_run = self.leading || self.trailing;
        if !has_run && !variable.is_empty() {
            return None;
        }
        (0..self.namings()).find_map(|naming| self.fit_named(st, variable, naming))
    }

    fn fit_named<B: Backend>(
        &self,
        st: &TransformState<B>,
        variable: &[&str],
        naming: usize,
    ) -> Option<Fit> {
        let host = st
            .counters
            .iter()
            .map(|c| c.0)
            .eq(Self::names(self.counters, naming))
            && st
                .scalars
                .iter()
                .map(|s| s.0)
                .eq(Self::names(self.scalars, naming))
            && st
                .codes
                .iter()
                .map(|c| c.name)
                .eq(Self::names(self.codes, naming));
        if !host {
            return None;
        }
        let lead: &[&str] = if self.leading { variable } else { &[] };
        let trail: &[&str] = if self.trailing { variable } else { &[] };
        let tensors_fit = |optional: bool| {
            let optional: Entries = if optional { self.optional } else { &[] };
            let expected = lead
                .iter()
                .copied()
                .chain(Self::names(self.tensors, naming))
                .chain(Self::names(optional, naming))
                .chain(trail.iter().copied());
            st.tensors.iter().map(|t| t.name).eq(expected)
        };
        let present = !self.optional.is_empty() && tensors_fit(true);
        (present || tensors_fit(false)).then_some(Fit {
            naming,
            optional: present,
            leading: lead.len(),
        })
    }

    /// A fresh state of this layout under `naming`: the parts named in declaration order,
    /// counters 0. The macro's `init` calls it with arrays of the declared lengths.
    pub fn build<B: Backend>(&self, naming: usize, parts: Parts<B>) -> TransformState<B> {
        let named = |entries: Entries, fresh: Vec<Fresh<B>>| {
            Self::names(entries, naming)
                .zip(fresh)
                .map(|(name, f)| f.named(name))
                .collect::<Vec<_>>()
        };
        let mut tensors = parts.leading;
        tensors.extend(named(self.tensors, parts.tensors));
        if let Some(optional) = parts.optional {
            tensors.extend(named(self.optional, optional));
        }
        tensors.extend(parts.trailing);
        TransformState {
            tensors,
            codes: Self::names(self.codes, naming)
                .zip(parts.codes)
                .map(|(name, c)| c.named(name))
                .collect(),
            counters: Self::names(self.counters, naming).map(|c| (c, 0)).collect(),
            scalars: Self::names(self.scalars, naming)
                .zip(parts.scalars)
                .collect(),
        }
    }
}

/// Declare a typed view of a transform's state (see [the module](mod@crate::state_view)).
#[macro_export]
macro_rules! state_view {
    (
        $(#[$attr:meta])*
        $vis:vis struct $View:ident {
            $( counters { $( $c:ident $( = $($cn:literal)|+ )? ),+ $(,)? } )?
            $( scalars { $( $s:ident $( = $($sn:literal)|+ )? ),+ $(,)? } )?
            $( leading tensors { $lead:ident $(,)? } )?
            $( tensors { $( $t:ident $( = $($tn:literal)|+ )? ),+ $(,)? } )?
            $( optional tensors { $( $o:ident $( = $($on:literal)|+ )? ),+ $(,)? } )?
            $( trailing tensors { $trail:ident $(,)? } )?
            $( codes { $( $k:ident $( = $($kn:literal)|+ )? ),+ $(,)? } )?
        }
    ) => {
        $(#[$attr])*
        #[doc = ""]
        #[doc = concat!(
            "A typed view of a transform state, declared with `state_view!`: `",
            stringify!($View),
            "::view` / `try_view` (exclusive) or `read` / `try_read` (shared)."
        )]
        $vis struct $View<'a, B, A = $crate::state_view::Mut>
        where
            B: $crate::state_view::__private::Backend,
            A: $crate::state_view::Access<'a>,
        {
            $($(
                #[doc = concat!("Counter `", stringify!($c), "`.")]
                pub $c: A::Ref<u64>,
            )+)?
            $($(
                #[doc = concat!("Scalar `", stringify!($s), "`.")]
                pub $s: A::Ref<f64>,
            )+)?
            $(
                #[doc = concat!("The leading run of tensors, `", stringify!($lead), "`.")]
                pub $lead: A::Ref<[$crate::transform::StateTensor<B>]>,
            )?
            $($(
                #[doc = concat!("Tensor `", stringify!($t), "`.")]
                pub $t: A::Ref<$crate::state_view::__private::Tensor<B, 1>>,
            )+)?
            $($(
                #[doc = concat!("Optional tensor `", stringify!($o), "`.")]
                pub $o: Option<A::Ref<$crate::state_view::__private::Tensor<B, 1>>>,
            )+)?
            $(
                #[doc = concat!("The trailing run of tensors, `", stringify!($trail), "`.")]
                pub $trail: A::Ref<[$crate::transform::StateTensor<B>]>,
            )?
            $($(
                #[doc = concat!("Code tensor `", stringify!($k), "`.")]
                pub $k: A::Ref<
                    $crate::state_view::__private::Tensor<B, 1, $crate::state_view::__private::Int>,
                >,
            )+)?
            _backend: $crate::state_view::__private::PhantomData<fn() -> B>,
        }

        #[allow(dead_code, reason = "a view need not use every generated item")]
        impl<'a, B: $crate::state_view::__private::Backend> $View<'a, B> {
            /// The declared layout.
            pub const LAYOUT: $crate::state_view::Layout = $crate::state_view::Layout {
                view: stringify!($View),
                counters: &[$($( $crate::__state_view_names!($c $(= $($cn)|+)?) ),+)?],
                scalars: &[$($( $crate::__state_view_names!($s $(= $($sn)|+)?) ),+)?],
                leading: $crate::__state_view_present!($($lead)?),
                tensors: &[$($( $crate::__state_view_names!($t $(= $($tn)|+)?) ),+)?],
                optional: &[$($( $crate::__state_view_names!($o $(= $($on)|+)?) ),+)?],
                trailing: $crate::__state_view_present!($($trail)?),
                codes: &[$($( $crate::__state_view_names!($k $(= $($kn)|+)?) ),+)?],
            }
            .checked();

            /// The view, if `st` fits the layout (names of every entry, by kind and in
            /// order, and their counts); `None` otherwise. Never panics.
            #[allow(unused_mut, unused_variables, reason = "sections a view leaves out")]
            pub fn try_view(
                st: &'a mut $crate::transform::TransformState<B>
                $(, $lead: &[&str])? $(, $trail: &[&str])?
            ) -> Option<Self> {
                let fit = Self::LAYOUT.fit(&*st, $crate::__state_view_run!($($lead)? $($trail)?))?;
                let (leading, rest) = st.tensors.split_at_mut_checked(fit.leading)?;
                let mut tensors = rest.iter_mut();
                let mut counters = st.counters.iter_mut();
                let mut scalars = st.scalars.iter_mut();
                let mut codes = st.codes.iter_mut();
                $($( let $c = &mut counters.next()?.1; )+)?
                $($( let $s = &mut scalars.next()?.1; )+)?
                $( let $lead = leading; )?
                $($( let $t = &mut tensors.next()?.tensor; )+)?
                $($(
                    let $o = if fit.optional { Some(&mut tensors.next()?.tensor) } else { None };
                )+)?
                $( let $trail = tensors.into_slice(); )?
                $($( let $k = &mut codes.next()?.tensor; )+)?
                Some(Self {
                    $($($c,)+)? $($($s,)+)? $($lead,)? $($($t,)+)? $($($o,)+)? $($trail,)?
                    $($($k,)+)?
                    _backend: $crate::state_view::__private::PhantomData,
                })
            }

            /// The view of a state that fits by the engine's invariant (every state comes
            /// from the transform's own `init`, or from a record checked name by name and
            /// shape by shape against it): for `Transform::update` and friends.
            ///
            /// # Panics
            ///
            /// When `st` does not fit: a transform reading a state it did not make.
            #[track_caller]
            pub fn view(
                st: &'a mut $crate::transform::TransformState<B>
                $(, $lead: &[&str])? $(, $trail: &[&str])?
            ) -> Self {
                Self::fits(Self::try_view(st $(, $lead)? $(, $trail)?))
            }

            /// `view`'s one check of the invariant (shared with `read`).
            #[track_caller]
            #[allow(
                clippy::expect_used,
                reason = "invariant: a transform's state comes from its own `init`, or from a \
                          record checked against `init` name by name and shape by shape"
            )]
            fn fits<V>(view: Option<V>) -> V {
                view.expect(concat!(
                    "state view `",
                    stringify!($View),
                    "`: the state does not fit its transform's layout, yet every state comes ",
                    "from the transform's own `init` or from a record checked against it name ",
                    "by name and shape by shape"
                ))
            }

            /// A fresh state of this layout (the first naming); counters 0.
            pub fn init(
                $( scalars: [f64; $crate::__state_view_count!($($s)+)], )?
                $( $lead: Vec<$crate::transform::StateTensor<B>>, )?
                $( tensors: [$crate::state_view::Fresh<B>; $crate::__state_view_count!($($t)+)], )?
                $(
                    optional: Option<
                        [$crate::state_view::Fresh<B>; $crate::__state_view_count!($($o)+)],
                    >,
                )?
                $( $trail: Vec<$crate::transform::StateTensor<B>>, )?
                $( codes: [$crate::state_view::FreshCodes<B>; $crate::__state_view_count!($($k)+)], )?
            ) -> $crate::transform::TransformState<B> {
                Self::init_named(
                    0,
                    $( $crate::__state_view_pass!(scalars $($s)+), )?
                    $( $lead, )?
                    $( $crate::__state_view_pass!(tensors $($t)+), )?
                    $( $crate::__state_view_pass!(optional $($o)+), )?
                    $( $trail, )?
                    $( $crate::__state_view_pass!(codes $($k)+), )?
                )
            }

            /// A fresh state of this layout under naming `naming`; counters 0.
            pub fn init_named(
                naming: usize,
                $( scalars: [f64; $crate::__state_view_count!($($s)+)], )?
                $( $lead: Vec<$crate::transform::StateTensor<B>>, )?
                $( tensors: [$crate::state_view::Fresh<B>; $crate::__state_view_count!($($t)+)], )?
                $(
                    optional: Option<
                        [$crate::state_view::Fresh<B>; $crate::__state_view_count!($($o)+)],
                    >,
                )?
                $( $trail: Vec<$crate::transform::StateTensor<B>>, )?
                $( codes: [$crate::state_view::FreshCodes<B>; $crate::__state_view_count!($($k)+)], )?
            ) -> $crate::transform::TransformState<B> {
                let mut parts = $crate::state_view::Parts::<B>::default();
                $( parts.scalars = $crate::__state_view_pass!(scalars $($s)+).to_vec(); )?
                $( parts.leading = $lead; )?
                $( parts.tensors = Vec::from($crate::__state_view_pass!(tensors $($t)+)); )?
                $( parts.optional = $crate::__state_view_pass!(optional $($o)+).map(Vec::from); )?
                $( parts.trailing = $trail; )?
                $( parts.codes = Vec::from($crate::__state_view_pass!(codes $($k)+)); )?
                Self::LAYOUT.build(naming, parts)
            }
        }

        #[allow(dead_code, reason = "a view need not use every generated item")]
        impl<'a, B: $crate::state_view::__private::Backend>
            $View<'a, B, $crate::state_view::Shared>
        {
            /// The shared view, if `st` fits the layout; `None` otherwise. Never panics.
            #[allow(unused_mut, unused_variables, reason = "sections a view leaves out")]
            pub fn try_read(
                st: &'a $crate::transform::TransformState<B>
                $(, $lead: &[&str])? $(, $trail: &[&str])?
            ) -> Option<Self> {
                let fit = $View::<B>::LAYOUT.fit(st, $crate::__state_view_run!($($lead)? $($trail)?))?;
                let (leading, rest) = st.tensors.split_at_checked(fit.leading)?;
                let mut tensors = rest.iter();
                let mut counters = st.counters.iter();
                let mut scalars = st.scalars.iter();
                let mut codes = st.codes.iter();
                $($( let $c = &counters.next()?.1; )+)?
                $($( let $s = &scalars.next()?.1; )+)?
                $( let $lead = leading; )?
                $($( let $t = &tensors.next()?.tensor; )+)?
                $($(
                    let $o = if fit.optional { Some(&tensors.next()?.tensor) } else { None };
                )+)?
                $( let $trail = tensors.as_slice(); )?
                $($( let $k = &codes.next()?.tensor; )+)?
                Some(Self {
                    $($($c,)+)? $($($s,)+)? $($lead,)? $($($t,)+)? $($($o,)+)? $($trail,)?
                    $($($k,)+)?
                    _backend: $crate::state_view::__private::PhantomData,
                })
            }

            /// The shared view of a state that fits by the engine's invariant (see `view`).
            ///
            /// # Panics
            ///
            /// When `st` does not fit: a transform reading a state it did not make.
            #[track_caller]
            pub fn read(
                st: &'a $crate::transform::TransformState<B>
                $(, $lead: &[&str])? $(, $trail: &[&str])?
            ) -> Self {
                $View::<B>::fits(Self::try_read(st $(, $lead)? $(, $trail)?))
            }
        }
    };
}

/// An entry's names (`state_view!`'s expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __state_view_names {
    ($f:ident) => {
        &[stringify!($f)]
    };
    ($f:ident = $($n:literal)|+) => {
        &[$($n),+]
    };
}

/// Whether a section is present (`state_view!`'s expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __state_view_present {
    () => {
        false
    };
    ($x:ident) => {
        true
    };
}

/// The run's expected names, or none (`state_view!`'s expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __state_view_run {
    () => {
        &[]
    };
    ($x:ident) => {
        $x
    };
}

/// The number of entries (`state_view!`'s expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __state_view_count {
    () => {
        0usize
    };
    ($x:ident $($rest:ident)*) => {
        1usize + $crate::__state_view_count!($($rest)*)
    };
}

/// The first token, a section's argument, driven by its entries (`state_view!`'s expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __state_view_pass {
    ($arg:ident $($entries:ident)+) => {
        $arg
    };
}

/// Every way to spoil a state, each with what was done: each entry renamed or removed, each
/// tensor duplicated, an entry added to each kind (tests: no view accepts any of them).
#[cfg(test)]
pub(crate) fn spoiled<B: Backend>(st: &TransformState<B>) -> Vec<(String, TransformState<B>)> {
    let mut out = Vec::new();
    let mut spoil = |what: String, f: &dyn Fn(&mut TransformState<B>)| {
        let mut s = st.clone();
        f(&mut s);
        out.push((what, s));
    };
    for i in 0..st.tensors.len() {
        let name = st.tensors[i].name;
        spoil(format!("tensor `{name}` renamed"), &|s| {
            s.tensors[i].name = "renamed"
        });
        spoil(format!("tensor `{name}` missing"), &|s| {
            s.tensors.remove(i);
        });
        spoil(format!("tensor `{name}` twice"), &|s| {
            s.tensors.insert(i, s.tensors[i].clone());
        });
    }
    for i in 0..st.counters.len() {
        let name = st.counters[i].0;
        spoil(format!("counter `{name}` renamed"), &|s| {
            s.counters[i].0 = "renamed"
        });
        spoil(format!("counter `{name}` missing"), &|s| {
            s.counters.remove(i);
        });
    }
    for i in 0..st.scalars.len() {
        let name = st.scalars[i].0;
        spoil(format!("scalar `{name}` renamed"), &|s| {
            s.scalars[i].0 = "renamed"
        });
        spoil(format!("scalar `{name}` missing"), &|s| {
            s.scalars.remove(i);
        });
    }
    for i in 0..st.codes.len() {
        let name = st.codes[i].name;
        spoil(format!("codes `{name}` renamed"), &|s| {
            s.codes[i].name = "renamed"
        });
        spoil(format!("codes `{name}` missing"), &|s| {
            s.codes.remove(i);
        });
        spoil(format!("codes `{name}` twice"), &|s| {
            s.codes.insert(i, s.codes[i].clone());
        });
    }
    let device = Default::default();
    spoil("an extra tensor".into(), &|s| {
        s.tensors.push(StateTensor::zeros("extra", &[1], &device));
    });
    spoil("an extra counter".into(), &|s| {
        s.counters.push(("extra", 0))
    });
    spoil("an extra scalar".into(), &|s| {
        s.scalars.push(("extra", 0.0))
    });
    spoil("extra codes".into(), &|s| {
        s.codes.push(CodeTensor {
            name: "extra",
            shape: vec![1],
            tensor: u8_tensor(vec![0], &device),
        });
    });
    out
}

#[cfg(test)]
mod tests;
