//! Seeded parameter initialisation: every initial weight is a pure function of the model's
//! seed, independent of the backend's global RNG and of test scheduling.

use burn::{
    module::Param,
    tensor::{Tensor, TensorData, backend::Backend},
};
use rand::{Rng, RngExt};

/// A tensor of i.i.d. U(−bound, bound) entries drawn from `rng`, in the device's default
/// float dtype.
pub fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    bound: f64,
    rng: &mut impl Rng,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// [`uniform`] as a trainable parameter.
pub fn uniform_param<B: Backend, const D: usize>(
    shape: [usize; D],
    bound: f64,
    rng: &mut impl Rng,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(uniform(shape, bound, rng, device))
}
