//! [`DeviceSteps`] on burn's CubeCL backends: tensors taken out of burn (no copy when uniquely
//! owned), one kernel launch per parameter, tensors put back.

use std::marker::PhantomData;

use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous,
    ops::numeric::zeros_client, tensor::CubeTensor,
};
use cubecl::{calculate_cube_count_elemwise, prelude::*};
use moment_optim::TransformState;
use moment_optim::fused::{
    Adam8Scalars, AdamScalars, DeviceSteps, FusedResult, LionScalars, SophiaScalars,
};
use moment_optim::quant::QuantMap;

use crate::kernels;

/// A burn backend whose tensors are CubeCL tensors of runtime [`CubeAccess::Runtime`]: the
/// plain [`CubeBackend`] and the same behind burn's operation fusion (burn's default CUDA and
/// wgpu types).
pub trait CubeAccess: Backend {
    /// The CubeCL runtime.
    type Runtime: CubeRuntime;
    /// The CubeCL tensor behind a float primitive (pending fused operations run first).
    fn float_into_cube(t: Self::FloatTensorPrimitive) -> CubeTensor<Self::Runtime>;
    /// A CubeCL tensor as a float primitive.
    fn float_from_cube(t: CubeTensor<Self::Runtime>) -> Self::FloatTensorPrimitive;
    /// The CubeCL tensor behind an int primitive.
    fn int_into_cube(t: Self::IntTensorPrimitive) -> CubeTensor<Self::Runtime>;
    /// A CubeCL tensor as an int primitive.
    fn int_from_cube(t: CubeTensor<Self::Runtime>) -> Self::IntTensorPrimitive;
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CubeAccess
    for CubeBackend<R, F, I, BT>
{
    type Runtime = R;
    fn float_into_cube(t: CubeTensor<R>) -> CubeTensor<R> {
        t
    }
    fn float_from_cube(t: CubeTensor<R>) -> CubeTensor<R> {
        t
    }
    fn int_into_cube(t: CubeTensor<R>) -> CubeTensor<R> {
        t
    }
    fn int_from_cube(t: CubeTensor<R>) -> CubeTensor<R> {
        t
    }
}

mod fusion {
    use burn::tensor::TensorMetadata;
    use burn_cubecl::{
        BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, tensor::CubeTensor,
    };
    use burn_fusion::{
        Fusion, FusionBackend, FusionTensor, NoOp, get_client, stream::OperationStreams,
    };
    use burn_ir::{BackendIr, InitOperationIr, OperationIr, OperationOutput};

    use super::CubeAccess;

    type Inner<R, F, I, BT> = CubeBackend<R, F, I, BT>;

    fn wrap<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        handle: <Inner<R, F, I, BT> as BackendIr>::Handle,
        t: &CubeTensor<R>,
    ) -> FusionTensor<<Inner<R, F, I, BT> as FusionBackend>::FusionRuntime> {
        let client = get_client::<Inner<R, F, I, BT>>(&t.device);
        let desc =
            InitOperationIr::create(t.shape(), t.dtype, || client.register_tensor_handle(handle));
        client
            .register(
                OperationStreams::default(),
                OperationIr::Init(desc),
                NoOp::<Inner<R, F, I, BT>>::new(),
            )
            .output()
    }

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CubeAccess
        for Fusion<CubeBackend<R, F, I, BT>>
    {
        type Runtime = R;
        fn float_into_cube(t: Self::FloatTensorPrimitive) -> CubeTensor<R> {
            t.client
                .clone()
                .resolve_tensor_float::<Inner<R, F, I, BT>>(t)
        }
        fn float_from_cube(t: CubeTensor<R>) -> Self::FloatTensorPrimitive {
            let h = <Inner<R, F, I, BT> as BackendIr>::float_tensor_handle(t.clone());
            wrap::<R, F, I, BT>(h, &t)
        }
        fn int_into_cube(t: Self::IntTensorPrimitive) -> CubeTensor<R> {
            t.client.clone().resolve_tensor_int::<Inner<R, F, I, BT>>(t)
        }
        fn int_from_cube(t: CubeTensor<R>) -> Self::IntTensorPrimitive {
            let h = <Inner<R, F, I, BT> as BackendIr>::int_tensor_handle(t.clone());
            wrap::<R, F, I, BT>(h, &t)
        }
    }
}

/// moment-optim's [`DeviceSteps`] for a [`CubeAccess`] backend `B`.
pub struct CubeSteps<B: Backend> {
    /// The 8-bit code maps (signed, unsigned) uploaded once per device.
    maps: std::sync::Mutex<Vec<(B::Device, Tensor<B, 1>, Tensor<B, 1>)>>,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend> Default for CubeSteps<B> {
    fn default() -> Self {
        Self {
            maps: Default::default(),
            _b: PhantomData,
        }
    }
}

impl<B: Backend> CubeSteps<B> {
    /// bitsandbytes' dynamic maps on `device`.
    fn maps(&self, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, s, u)) = maps.iter().find(|(d, _, _)| d == device) {
            return (s.clone(), u.clone());
        }
        let up = |m: &QuantMap| {
            Tensor::<B, 1>::from_data(
                burn::tensor::TensorData::new(m.values().to_vec(), [256]),
                device,
            )
        };
        let (s, u) = (
            up(QuantMap::dynamic_signed()),
            up(QuantMap::dynamic_unsigned()),
        );
        maps.push((device.clone(), s.clone(), u.clone()));
        (s, u)
    }
}

impl<B: Backend> std::fmt::Debug for CubeSteps<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CubeSteps")
    }
}

/// Whether every tensor is a plain f32 tensor (not quantized).
fn all_f32<B: Backend>(ts: &[&Tensor<B, 1>]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// The CubeCL tensor of `t`, contiguous.
fn cube_ref<B: CubeAccess>(t: Tensor<B, 1>) -> CubeTensor<B::Runtime> {
    into_contiguous(B::float_into_cube(t.into_primitive().tensor()))
}

/// The CubeCL tensor of `t`, contiguous and safe to write in place (copied when shared).
fn cube_mut<B: CubeAccess>(t: Tensor<B, 1>) -> CubeTensor<B::Runtime> {
    let c = cube_ref(t);
    if c.can_mut() { c } else { c.copy() }
}

fn back<B: CubeAccess>(c: CubeTensor<B::Runtime>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(B::float_from_cube(c)))
}

/// Take state tensor `i` out of `st` (an empty placeholder stays until it is put back).
fn take_state<B: CubeAccess>(st: &mut TransformState<B>, i: usize) -> CubeTensor<B::Runtime> {
    let device = st.tensors[i].tensor.device();
    cube_mut(std::mem::replace(
        &mut st.tensors[i].tensor,
        Tensor::empty([0], &device),
    ))
}

/// What every element-wise step does first: decline (hand the inputs back) unless `param`,
/// `grad` and `states` are plain f32; finish at once for an empty tensor; otherwise the
/// parameter (writable) and gradient as CubeCL tensors, the element count and a grid of one
/// unit per element.
#[allow(clippy::type_complexity, clippy::result_large_err)]
fn prologue<B: CubeAccess>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    states: &[&Tensor<B, 1>],
) -> Result<
    (
        CubeTensor<B::Runtime>,
        CubeTensor<B::Runtime>,
        usize,
        (CubeCount, CubeDim),
    ),
    FusedResult<B>,
> {
    if !all_f32(&[&param, &grad]) || !all_f32(states) {
        return Err(Err((param, grad)));
    }
    let n = param.dims()[0];
    if n == 0 {
        return Err(Ok(param));
    }
    let p = cube_mut(param);
    let g = cube_ref(grad);
    let grid = grid(&p, n);
    Ok((p, g, n, grid))
}

/// Grid for one unit per element.
fn grid<R: CubeRuntime>(c: &CubeTensor<R>, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(&c.client, n);
    (calculate_cube_count_elemwise(&c.client, n, dim), dim)
}

impl<B: CubeAccess> DeviceSteps<B> for CubeSteps<B> {
    fn adam(
        &self,
        sc: &AdamScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let k = if sc.amsgrad { 3 } else { 2 };
        let states: Vec<&Tensor<B, 1>> = st.tensors[..k].iter().map(|s| &s.tensor).collect();
        let (p, g, _, (count, dim)) = match prologue(param, grad, &states) {
            Ok(x) => x,
            Err(done) => return done,
        };
        let mut s: Vec<_> = (0..k).map(|i| take_state(st, i)).collect();
        if !sc.amsgrad {
            s.push(zeros_client(
                p.client.clone(),
                p.device.clone(),
                [1].into(),
                DType::F32,
            ));
        }
        kernels::adam::launch::<B::Runtime>(
            &p.client,
            count,
            dim,
            p.clone().into_tensor_arg(),
            g.into_tensor_arg(),
            s[0].clone().into_tensor_arg(),
            s[1].clone().into_tensor_arg(),
            s[2].clone().into_tensor_arg(),
            sc.one_minus_b1,
            sc.lerp_rest,
            sc.b2,
            sc.one_minus_b2,
            sc.inv_bc2_sqrt,
            sc.eps,
            sc.inv_bc1,
            sc.neg_lr,
            sc.coupled.unwrap_or(0.0),
            sc.decoupled.unwrap_or(0.0),
            sc.maximize,
            sc.coupled.is_some(),
            sc.decoupled.is_some(),
            sc.amsgrad,
        );
        for (i, c) in s.into_iter().take(k).enumerate() {
            st.tensors[i].tensor = back(c);
        }
        Ok(back(p))
    }

    fn lion(
        &self,
        sc: &LionScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let (p, g, _, (count, dim)) = match prologue(param, grad, &[&st.tensors[0].tensor]) {
            Ok(x) => x,
            Err(done) => return done,
        };
        let m = take_state(st, 0);
        kernels::lion::launch::<B::Runtime>(
            &p.client,
            count,
            dim,
            p.clone().into_tensor_arg(),
            g.into_tensor_arg(),
            m.clone().into_tensor_arg(),
            sc.b1,
            sc.one_minus_b1,
            sc.b2,
            sc.one_minus_b2,
            sc.decoupled.unwrap_or(0.0),
            sc.neg_lr,
            sc.maximize,
            sc.decoupled.is_some(),
        );
        st.tensors[0].tensor = back(m);
        Ok(back(p))
    }

    fn sophia(
        &self,
        sc: &SophiaScalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        let states = [&st.tensors[0].tensor, &st.tensors[1].tensor];
        let (p, g, n, (count, dim)) = match prologue(param, grad, &states) {
            Ok(x) => x,
            Err(done) => return done,
        };
        let m = take_state(st, 0);
        let h = cube_ref(st.tensors[1].tensor.clone());
        let cubes = cube_total(&count);
        let wins = zeros_client(
            p.client.clone(),
            p.device.clone(),
            [cubes].into(),
            DType::U32,
        );
        kernels::sophia::launch::<B::Runtime>(
            &p.client,
            count,
            dim,
            p.clone().into_tensor_arg(),
            g.into_tensor_arg(),
            m.clone().into_tensor_arg(),
            h.into_tensor_arg(),
            wins.clone().into_tensor_arg(),
            sc.b1,
            sc.w,
            sc.rho,
            sc.eps,
            sc.clip,
            sc.coupled.unwrap_or(0.0),
            sc.decoupled.unwrap_or(0.0),
            sc.neg_lr,
            sc.maximize,
            sc.coupled.is_some(),
            sc.decoupled.is_some(),
            sc.variant_h,
        );
        st.tensors[0].tensor = back(m);
        // wins / n in f32, as the CPU kernel divides its exact count.
        let rate = zeros_client(p.client.clone(), p.device.clone(), [1].into(), DType::F32);
        kernels::win_rate::launch::<B::Runtime>(
            &p.client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(1),
            wins.into_tensor_arg(),
            rate.clone().into_tensor_arg(),
            n as f32,
        );
        st.tensors[2].tensor = back(rate);
        Ok(back(p))
    }

    fn adam8bit(
        &self,
        sc: &Adam8Scalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        self.adam8bit_impl(sc, param, grad, st)
    }
}

impl<B: CubeAccess> CubeSteps<B> {
    fn adam8bit_impl(
        &self,
        sc: &Adam8Scalars,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        st: &mut TransformState<B>,
    ) -> FusedResult<B> {
        // u8 codes, or i32 where the runtime has no 8-bit storage (`code_dtype`).
        let code_dtype = st.codes[0].tensor.dtype();
        let codes_ok = matches!(code_dtype, DType::U8 | DType::I32)
            && st.codes.iter().all(|c| c.tensor.dtype() == code_dtype);
        if !codes_ok || sc.block == 0 || u32::try_from(sc.block).is_err() {
            return Err((param, grad));
        }
        let device = param.device();
        let states = [&st.tensors[0].tensor, &st.tensors[1].tensor];
        // (The element grid is not used: this kernel runs one cube per block.)
        let (p, g, _, _) = match prologue(param, grad, &states) {
            Ok(x) => x,
            Err(done) => return done,
        };
        let (map1, map2) = self.maps(&device);
        let nb = st.tensors[0].tensor.dims()[0];
        let a1 = take_state(st, 0);
        let a2 = take_state(st, 1);
        let mut k = Vec::with_capacity(2);
        for c in &mut st.codes {
            let t = std::mem::replace(&mut c.tensor, Tensor::empty([0], &device));
            let t = into_contiguous(B::int_into_cube(t.into_primitive()));
            k.push(if t.can_mut() { t } else { t.copy() });
        }
        // One cube per block; units: the block rounded up to a power of two, at most 256.
        let units = sc.block.next_power_of_two().min(256);
        kernels::adam8bit::launch::<B::Runtime>(
            &p.client,
            cubes(nb),
            CubeDim::new_1d(units as u32),
            p.clone().into_tensor_arg(),
            g.into_tensor_arg(),
            k[0].clone().into_tensor_arg(),
            k[1].clone().into_tensor_arg(),
            a1.clone().into_tensor_arg(),
            a2.clone().into_tensor_arg(),
            cube_ref(map1).into_tensor_arg(),
            cube_ref(map2).into_tensor_arg(),
            sc.b1,
            sc.one_minus_b1,
            sc.b2,
            sc.one_minus_b2,
            sc.eps_c2,
            sc.step_size,
            sc.keep.unwrap_or(1.0),
            sc.block as u32,
            sc.keep.is_some(),
            units,
            code_dtype.into(),
        );
        for (c, t) in st.codes.iter_mut().zip(k) {
            c.tensor = Tensor::from_primitive(B::int_from_cube(t));
        }
        st.tensors[0].tensor = back(a1);
        st.tensors[1].tensor = back(a2);
        Ok(back(p))
    }
}

/// A grid of `cubes` cubes (at most 65 535 along a dimension, as every runtime allows).
fn cubes(cubes: usize) -> CubeCount {
    const MAX: usize = 65_535;
    let x = cubes.clamp(1, MAX);
    let y = cubes.div_ceil(x).max(1);
    // y ≤ 65 535 up to 4·10⁹ cubes; beyond that, the third dimension.
    let z = y.div_ceil(MAX).max(1);
    CubeCount::Static(x as u32, y.min(MAX) as u32, z as u32)
}

/// Number of cubes in a grid.
fn cube_total(c: &CubeCount) -> usize {
    match c {
        CubeCount::Static(x, y, z) => (*x as usize) * (*y as usize) * (*z as usize),
        CubeCount::Dynamic(_) => 0,
    }
}
