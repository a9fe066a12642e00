//! DP-SGD with Opacus semantics.
//!
//! One step: draw a Poisson sample (each record independently with probability `q`, so the batch
//! size varies), clip every example's gradient to norm `C` ([`clip`], without materialising
//! per-example gradients), add `N(0, σ²C²)` to the clipped sum (the one noise sampler,
//! [`GaussianNoise`], seeded from the OS in real runs), divide by the *expected* batch size `qN`
//! and hand the result to the optimiser ([`optimizer`]). An empty sample still takes a step with
//! pure noise, as the privacy analysis assumes.

pub mod clip;
pub mod optimizer;

use crate::dp::GaussianNoise;
use confide_common::model::{Layer, ModelSpec};
use rand::{Rng, RngExt};
use tch::Tensor;
use thiserror::Error;

use crate::model::{Network, cross_entropy_sum};
pub use clip::{ClippedBatch, clipped_gradient_sum};
pub use optimizer::{Optimizer, OptimizerConfig};

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

/// Noisy, clipped gradients for `net` on a batch: `(Σ clipped + N(0, σ²C²)) / expected_batch`.
/// `noise_buffer` is reused across steps to avoid reallocating the noise vector.
pub fn noisy_gradient(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    params: &DpSgdParams,
    expected_batch: f64,
    noise: &mut GaussianNoise,
    noise_buffer: &mut Vec<f32>,
) -> (Vec<Tensor>, StepStats) {
    let batch = clipped_gradient_sum(net, x, y, params.clip_norm);
    let n = batch.norms.size()[0] as usize;
    let std_dev = params.noise_multiplier * params.clip_norm;
    let _guard = tch::no_grad_guard();
    let grads = if std_dev > 0.0 {
        noise_buffer.resize(net.num_parameters(), 0.0);
        noise.fill_f32(noise_buffer, std_dev);
        let noise_tensor = Tensor::from_slice(noise_buffer);
        batch
            .clipped_sum
            .iter()
            .zip(net.layout())
            .map(|(g, p)| {
                let part = noise_tensor
                    .narrow(0, p.offset as i64, p.len() as i64)
                    .reshape(g.size().as_slice());
                (g + part) / expected_batch
            })
            .collect()
    } else {
        batch
            .clipped_sum
            .iter()
            .map(|g| g / expected_batch)
            .collect()
    };
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
    (grads, stats)
}

/// The ordinary (non-private) mean gradient of the cross-entropy loss on a batch.
pub fn plain_gradient(net: &Network, x: &Tensor, y: &Tensor) -> (Vec<Tensor>, f64) {
    let n = y.size()[0];
    if n == 0 {
        return (net.params().iter().map(Tensor::zeros_like).collect(), 0.0);
    }
    let loss = cross_entropy_sum(&net.forward(x), y) / n as f64;
    let grads = Tensor::run_backward(&[&loss], net.params(), false, false);
    (grads, loss.double_value(&[]))
}
