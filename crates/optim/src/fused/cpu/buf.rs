//! Host buffers taken out of burn-ndarray / burn-flex tensors (copied only when shared) and
//! put back; gradients borrowed for reading; large buffers moved onto huge pages.

use std::any::Any;

#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;
use burn::backend::ndarray::{NdArrayTensor, SharedArray};
use burn::tensor::{Int, Tensor, TensorPrimitive, backend::Backend};

use crate::transform::TransformState;

/// A float primitive as `Any`, or `t` back (quantized).
#[allow(clippy::result_large_err)]
fn float_any<B: Backend>(t: Tensor<B, 1>) -> Result<Box<dyn Any>, Tensor<B, 1>> {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => Ok(Box::new(p)),
        q @ TensorPrimitive::QFloat(_) => Err(Tensor::from_primitive(q)),
    }
}

/// A primitive of `B`'s float type (as `Any`) back into a tensor.
#[allow(
    clippy::expect_used,
    reason = "invariant: only called with B's own primitive"
)]
fn float_back<B: Backend>(any: Box<dyn Any>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(
        *any.downcast::<B::FloatTensorPrimitive>()
            .expect("only called with B's own float primitive"),
    ))
}

/// A primitive of `B`'s int type (as `Any`) back into a tensor.
#[allow(
    clippy::expect_used,
    reason = "invariant: only called with B's own primitive"
)]
fn int_back<B: Backend>(any: Box<dyn Any>) -> Tensor<B, 1, Int> {
    Tensor::from_primitive(
        *any.downcast::<B::IntTensorPrimitive>()
            .expect("only called with B's own int primitive"),
    )
}

/// Whether a flex tensor is a plain contiguous buffer of exactly its elements.
#[cfg(feature = "flex")]
fn flex_plain(t: &FlexTensor, dtype: burn::tensor::DType) -> bool {
    let n = t.layout().num_elements();
    t.dtype() == dtype
        && t.layout().contiguous_offsets() == Some((0, n))
        && t.bytes().len() == n * dtype.size()
}

/// A host buffer of `T` taken out of a tensor of a supported CPU backend (copied only when
/// shared), written in place and put back.
pub(super) enum Buf<T> {
    /// burn-ndarray storage.
    Nd(SharedArray<T>),
    /// burn-flex storage (copy-on-write on first mutable access).
    #[cfg(feature = "flex")]
    Flex(FlexTensor),
}

/// `Buf<$elem>`'s `take` (out of a `Tensor<B, 1, $kind>`), `slice_mut` and `back`.
macro_rules! buf_impl {
    ($elem:ty, $kind:ty, $variant:ident, $dtype:expr, $to_any:expr, $back:ident) => {
        impl Buf<$elem> {
            /// The buffer behind `t`, or `t` back (another backend, dtype or layout).
            #[allow(clippy::result_large_err)]
            pub(super) fn take<B: Backend>(
                t: Tensor<B, 1, $kind>,
            ) -> Result<Self, Tensor<B, 1, $kind>> {
                Self::take_with(t, true)
            }

            /// [`Self::take`]; `rehome`: move a large unique buffer into huge pages
            /// ([`Buf::rehome`]; worth it for buffers that stay, not for one-step ones).
            pub(super) fn take_with<B: Backend>(
                t: Tensor<B, 1, $kind>,
                rehome: bool,
            ) -> Result<Self, Tensor<B, 1, $kind>> {
                let any: Box<dyn Any> = $to_any(t)?;
                let any = match any.downcast::<NdArrayTensor>() {
                    Ok(nd) => {
                        return match *nd {
                            NdArrayTensor::$variant(storage) => {
                                let unique = storage.is_unique();
                                let arr = storage.into_owned();
                                if arr.is_standard_layout() {
                                    let mut buf = Buf::Nd(arr);
                                    if unique && rehome {
                                        // (a shared one was just copied by `into_owned`;
                                        // moving that copy again would double the cost)
                                        buf.rehome();
                                    }
                                    Ok(buf)
                                } else {
                                    Err($back::<B>(Box::new(NdArrayTensor::from(arr))))
                                }
                            }
                            other => Err($back::<B>(Box::new(other))),
                        };
                    }
                    Err(any) => any,
                };
                #[cfg(feature = "flex")]
                let any = match any.downcast::<FlexTensor>() {
                    Ok(ft) if flex_plain(&ft, $dtype) => return Ok(Buf::Flex(*ft)),
                    Ok(ft) => return Err($back::<B>(ft)),
                    Err(any) => any,
                };
                Err($back::<B>(any))
            }

            #[allow(
                clippy::expect_used,
                reason = "invariant: `take` keeps only standard-layout arrays"
            )]
            pub(super) fn slice_mut(&mut self) -> &mut [$elem] {
                match self {
                    Buf::Nd(a) => a.as_slice_mut().expect("standard layout checked in take"),
                    #[cfg(feature = "flex")]
                    Buf::Flex(t) => t.storage_mut::<$elem>(),
                }
            }

            pub(super) fn back<B: Backend>(self) -> Tensor<B, 1, $kind> {
                match self {
                    Buf::Nd(a) => $back::<B>(Box::new(NdArrayTensor::from(a))),
                    #[cfg(feature = "flex")]
                    Buf::Flex(t) => $back::<B>(Box::new(t)),
                }
            }
        }
    };
}

/// Buffers of at least this many bytes are re-homed ([`Buf::rehome`]).
const REHOME_MIN: usize = 16 << 20;
const HUGE_PAGE: usize = 2 << 20;

impl<T: Copy + Default> Buf<T> {
    /// Move a large, uniquely owned ndarray buffer (once) into memory whose 2 MiB-aligned
    /// interior is advised for huge pages ([`crate::fused::advise_huge_pages`]) before it is
    /// first touched, so the step streams through 2 MiB pages from its first call instead of
    /// whenever `khugepaged` gets to them. The array's data then starts on a 2 MiB
    /// boundary (a view into a `Vec` up to 2 MiB longer: < 12.5% at the 16 MiB threshold,
    /// < 1% from 256 MiB), which is how an already re-homed buffer is recognised: the next
    /// steps cost one pointer check. burn-ndarray honours the view's offset everywhere
    /// (`into_data` drains it). One copy per buffer, on its first fused step; flex buffers
    /// and small ones are left as they are.
    fn rehome(&mut self) {
        #[allow(irrefutable_let_patterns)]
        let Buf::Nd(a) = self else { return };
        let n = a.len();
        let start = a.as_ptr() as usize;
        if size_of::<T>() * n < REHOME_MIN || start.is_multiple_of(HUGE_PAGE) {
            return;
        }
        let Some(src) = a.as_slice() else { return };
        let pad = HUGE_PAGE / size_of::<T>();
        let mut v: Vec<T> = Vec::with_capacity(n + pad);
        let base = v.as_ptr() as usize;
        let k = (base.next_multiple_of(HUGE_PAGE) - base) / size_of::<T>();
        crate::fused::advise_huge_pages(v.spare_capacity_mut());
        v.resize(k, T::default());
        v.extend_from_slice(src);
        let Ok(mut b) = SharedArray::<T>::from_shape_vec(vec![k + n], v) else {
            return;
        };
        b.slice_axis_inplace(ndarray::Axis(0), ndarray::Slice::from(k..k + n));
        if b.is_standard_layout() && b.len() == n {
            *a = b;
        }
    }
}

#[cfg(test)]
// `Buf` has one variant unless the `flex` feature is on
#[allow(irrefutable_let_patterns)]
mod rehome_tests {
    use super::*;

    #[test]
    fn rehome_moves_a_large_buffer_to_a_2mib_boundary_once_and_keeps_it() {
        let n = REHOME_MIN / 4 + 3;
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let arr = SharedArray::<f32>::from_shape_vec(vec![n], data.clone()).unwrap();
        let mut b = Buf::Nd(arr);
        b.rehome();
        let Buf::Nd(a) = &b else {
            panic!("ndarray buffer")
        };
        let at = a.as_ptr() as usize;
        assert_eq!(at % HUGE_PAGE, 0, "data starts on a 2 MiB boundary");
        assert_eq!(a.shape(), &[n]);
        assert!(a.is_standard_layout());
        assert!(
            a.as_slice().unwrap() == &data[..],
            "contents moved unchanged"
        );
        // A second call recognises it and does not move it again.
        b.rehome();
        let Buf::Nd(a) = &b else {
            panic!("ndarray buffer")
        };
        assert_eq!(a.as_ptr() as usize, at);
        // Through burn: the tensor's data is exactly the view (the offset is drained).
        let t: Tensor<burn::backend::NdArray<f32>, 1> = b.back();
        assert!(t.into_data().to_vec::<f32>().unwrap() == data);
        // Small buffers stay where they are.
        let small = SharedArray::<f32>::from_shape_vec(vec![1000], vec![1.0; 1000]).unwrap();
        let p = small.as_ptr();
        let mut b = Buf::Nd(small);
        b.rehome();
        let Buf::Nd(a) = &b else {
            panic!("ndarray buffer")
        };
        assert_eq!(a.as_ptr(), p);
    }
}

buf_impl!(
    f32,
    burn::tensor::Float,
    F32,
    burn::tensor::DType::F32,
    float_any,
    float_back
);
buf_impl!(
    u8,
    Int,
    U8,
    burn::tensor::DType::U8,
    |t: Tensor<B, 1, Int>| -> Result<Box<dyn Any>, Tensor<B, 1, Int>> {
        Ok(Box::new(t.into_primitive()))
    },
    int_back
);

/// A gradient borrowed for reading (never copied).
pub(super) enum View {
    Nd(NdArrayTensor),
    #[cfg(feature = "flex")]
    Flex(FlexTensor),
}

impl View {
    /// The f32 tensor behind `t` with a plain contiguous layout, or `t` back.
    #[allow(clippy::result_large_err)]
    pub(super) fn peek<B: Backend>(t: Tensor<B, 1>) -> Result<Self, Tensor<B, 1>> {
        let any = float_any(t)?;
        let any = match any.downcast::<NdArrayTensor>() {
            Ok(nd) => {
                return match *nd {
                    NdArrayTensor::F32(s) if s.view().is_standard_layout() => {
                        Ok(View::Nd(NdArrayTensor::F32(s)))
                    }
                    other => Err(float_back::<B>(Box::new(other))),
                };
            }
            Err(any) => any,
        };
        #[cfg(feature = "flex")]
        let any = match any.downcast::<FlexTensor>() {
            Ok(ft) if flex_plain(&ft, burn::tensor::DType::F32) => return Ok(View::Flex(*ft)),
            Ok(ft) => return Err(float_back::<B>(ft)),
            Err(any) => any,
        };
        Err(float_back::<B>(any))
    }

    /// Run `f` on the values.
    #[allow(
        clippy::expect_used,
        clippy::unreachable,
        reason = "invariant: `peek` keeps only standard-layout f32 views"
    )]
    pub(super) fn with<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
        match self {
            View::Nd(NdArrayTensor::F32(s)) => {
                let v = s.view();
                f(v.as_slice().expect("standard layout checked in peek"))
            }
            View::Nd(_) => unreachable!("peek only keeps f32 tensors"),
            #[cfg(feature = "flex")]
            View::Flex(t) => f(t.storage::<f32>()),
        }
    }

    pub(super) fn back<B: Backend>(self) -> Tensor<B, 1> {
        match self {
            View::Nd(nd) => float_back::<B>(Box::new(nd)),
            #[cfg(feature = "flex")]
            View::Flex(t) => float_back::<B>(Box::new(t)),
        }
    }
}

/// The parameter's buffer (taken) and the gradient's (borrowed), or both tensors back.
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub(super) fn take_param_grad<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
) -> Result<(Buf<f32>, View), (Tensor<B, 1>, Tensor<B, 1>)> {
    let p = match Buf::<f32>::take(param) {
        Ok(a) => a,
        Err(p) => return Err((p, grad)),
    };
    // The gradient is only read: borrow its buffer (no copy even when shared).
    match View::peek(grad) {
        Ok(g) => Ok((p, g)),
        Err(g) => Err((p.back(), g)),
    }
}

/// The buffers of `st`'s first `k` float tensors, or `None` with `st` as it was.
pub(super) fn take_floats<B: Backend>(
    st: &mut TransformState<B>,
    k: usize,
) -> Option<Vec<Buf<f32>>> {
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let empty = Tensor::<B, 1>::zeros([0], &Default::default());
        match Buf::<f32>::take(std::mem::replace(&mut st.tensors[i].tensor, empty)) {
            Ok(a) => out.push(a),
            Err(t) => {
                st.tensors[i].tensor = t;
                put_floats(st, out);
                return None;
            }
        }
    }
    Some(out)
}

/// Put buffers taken by [`take_floats`] back.
pub(super) fn put_floats<B: Backend>(st: &mut TransformState<B>, bufs: Vec<Buf<f32>>) {
    for (i, a) in bufs.into_iter().enumerate() {
        st.tensors[i].tensor = a.back();
    }
}
