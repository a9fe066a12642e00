//! DP-SGD with Opacus semantics.
//!
//! One step: draw a Poisson sample (each record independently with probability `q`, so the batch
//! size varies), clip every example's gradient to norm `C` ([`clip`], without materialising
//! per-example gradients), add `N(0, σ²C²)` to the clipped sum (the one noise sampler,
//! [`GaussianNoise`], seeded from the OS in real runs), divide by a *public* expected batch size
//! `B` ([`DpSgdParams::expected_batch_size`]) and hand the result to the optimiser ([`optimizer`]).
//! An empty sample still takes a step with pure noise, as the privacy analysis assumes.
//!
//! `B` is a parameter, never computed here from the records: Opacus divides by `qN`, but a site's
//! record count `N` is private, and dividing by it scales the noise by `1/N`, so `N` could be read
//! off the spread of a single update.

pub mod clip;
pub mod optimizer;
pub mod phases;

use crate::dp::GaussianNoise;
use confide_common::model::{Layer, ModelSpec};
use rand::{Rng, RngExt};
use rayon::prelude::*;
use tch::Tensor;
use thiserror::Error;

use crate::model::{Network, cross_entropy_sum};
use crate::tensor_fill::fill_f32;
pub use clip::{ClippedBatch, clipped_gradient_sum, clipped_gradient_sum_into};
pub use optimizer::{Optimizer, OptimizerConfig};
pub use phases::{PhaseTime, Stopwatch};

/// A model the clipper cannot handle, reported before training starts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "layer {index} ({layer}) has trainable parameters that the DP-SGD clipper cannot clip per example; \
     supported parameterised layers: linear, conv2d (parameter-free layers: relu, tanh, sigmoid, \
     max_pool2d, avg_pool2d, flatten)"
)]
pub struct UnsupportedLayer {
    pub index: usize,
    pub layer: &'static str,
}

/// Checks that every parameterised layer of `spec` is one the ghost clipper supports.
pub fn check_supported(spec: &ModelSpec) -> Result<(), UnsupportedLayer> {
    for (index, layer) in spec.layers().iter().enumerate() {
        match layer {
            Layer::Linear { .. }
            | Layer::Conv2d { .. }
            | Layer::MaxPool2d { .. }
            | Layer::AvgPool2d { .. }
            | Layer::Flatten
            | Layer::Relu
            | Layer::Tanh
            | Layer::Sigmoid => {}
            Layer::LayerNorm { .. } => {
                return Err(UnsupportedLayer {
                    index,
                    layer: layer.type_name(),
                });
            }
        }
    }
    Ok(())
}

/// Poisson sampling: each of `n` records is in the batch independently with probability `rate`.
pub fn poisson_sample<R: Rng + ?Sized>(rng: &mut R, n: usize, rate: f64) -> Vec<usize> {
    (0..n).filter(|_| rng.random::<f64>() < rate).collect()
}

/// Parameters of the DP-SGD mechanism for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgdParams {
    /// Poisson sampling rate `q`.
    pub sampling_rate: f64,
    /// Per-example clip norm `C` (`f64::INFINITY` only for tests: no finite sensitivity).
    pub clip_norm: f64,
    /// Noise multiplier `σ`: the noise standard deviation is `σC`.
    pub noise_multiplier: f64,
    /// The public divisor `B` of the noisy clipped sum (a study's declared expected batch size).
    /// Not derived from the site's records: it sets the noise scale of the update, `σC/B`.
    pub expected_batch_size: f64,
}

/// What one step did (for progress reporting; contains no per-record information).
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub batch_size: usize,
    /// Mean per-example loss before the update (0 for an empty batch).
    pub mean_loss: f64,
    /// Fraction of examples whose gradient was clipped.
    pub clipped_fraction: f64,
}

/// Noisy, clipped gradients for `net` on a batch: `(Σ clipped + N(0, σ²C²)) / B`, with `B` the
/// public [`DpSgdParams::expected_batch_size`].
pub fn noisy_gradient(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    params: &DpSgdParams,
    noise: &mut GaussianNoise,
) -> (Vec<Tensor>, StepStats) {
    noisy_gradient_timed(net, x, y, params, noise, &mut Stopwatch::disabled())
}

/// [`noisy_gradient`], charging its phases to `clock`.
///
/// Computed as `Σᵢ (cᵢ / B) gᵢ + N(0, (σC / B)²)`: the noise is drawn straight into the gradient
/// vector and the clipped sum is accumulated onto it by the book-keeping products, so neither the
/// noise addition nor the division is a separate pass over the parameters.
pub fn noisy_gradient_timed(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    params: &DpSgdParams,
    noise: &mut GaussianNoise,
    clock: &mut Stopwatch,
) -> (Vec<Tensor>, StepStats) {
    let expected_batch = params.expected_batch_size;
    // σ = 0 means no noise even with C = ∞ (tests), where σC would be NaN.
    let std_dev = if params.noise_multiplier == 0.0 {
        0.0
    } else {
        params.noise_multiplier * params.clip_norm / expected_batch
    };
    let base = || noise_vector(noise, net.num_parameters(), std_dev);
    let batch = clipped_gradient_sum_into(
        net,
        x,
        y,
        params.clip_norm,
        1.0 / expected_batch,
        base,
        clock,
    );
    let n = batch.norms.size()[0] as usize;
    let grads = batch.clipped_sum;
    let clipped = if n == 0 {
        0.0
    } else {
        batch
            .norms
            .gt(params.clip_norm)
            .to_kind(tch::Kind::Float)
            .mean(tch::Kind::Float)
            .double_value(&[])
    };
    let stats = StepStats {
        batch_size: n,
        mean_loss: if n == 0 {
            0.0
        } else {
            batch.loss_sum / n as f64
        },
        clipped_fraction: clipped,
    };
    clock.lap("step statistics");
    (grads, stats)
}

/// A fresh `[len]` f32 tensor of independent `N(0, std_dev²)` draws from `noise` (zeros if
/// `std_dev` is 0), written straight into the tensor's storage. The tensor starts as zeros (never
/// uninitialised memory): measured in the README (DP-SGD engine), that pass costs little next to the draw.
fn noise_vector(noise: &mut GaussianNoise, len: usize, std_dev: f64) -> Tensor {
    let options = (tch::Kind::Float, tch::Device::Cpu);
    let mut tensor = Tensor::zeros([len as i64], options);
    if std_dev == 0.0 || len == 0 {
        return tensor;
    }
    // On torch's own OpenMP team, which is spinning between torch operations anyway (see `crate::omp`).
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
    let filled = fill_f32(&mut tensor, |data| {
        noise.fill_f32_with(data, std_dev, |chunks, fill| {
            if chunks > 1 && !crate::omp::parallel_for(chunks, threads, fill) {
                (0..chunks).into_par_iter().for_each(fill);
            }
        });
    });
    if filled.is_err() {
        // Not reached (`Tensor::zeros` with these options is a contiguous f32 CPU tensor); if it were, the noise
        // is drawn into a vector and copied in rather than ever leaving the gradient without it.
        let mut values = vec![0f32; len];
        noise.fill_f32(&mut values, std_dev);
        return Tensor::from_slice(&values);
    }
    tensor
}

/// The ordinary (non-private) mean gradient of the cross-entropy loss on a batch.
pub fn plain_gradient(net: &Network, x: &Tensor, y: &Tensor) -> (Vec<Tensor>, f64) {
    plain_gradient_timed(net, x, y, &mut Stopwatch::disabled())
}

/// [`plain_gradient`], charging its phases to `clock`.
pub fn plain_gradient_timed(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    clock: &mut Stopwatch,
) -> (Vec<Tensor>, f64) {
    let n = y.size()[0];
    if n == 0 {
        return (net.params().iter().map(Tensor::zeros_like).collect(), 0.0);
    }
    let loss = cross_entropy_sum(&net.forward(x), y) / n as f64;
    clock.lap("forward");
    let grads = Tensor::run_backward(&[&loss], net.params(), false, false);
    let loss = loss.double_value(&[]);
    clock.lap("backward");
    (grads, loss)
}
