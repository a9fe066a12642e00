//! Per-example gradient clipping without per-example gradients: ghost norm + book-keeping.
//!
//! For a parameterised layer with input activations `a` and output gradients `δ = ∂L/∂z` (the loss
//! `L` being the *sum* of per-example losses, so row `i` of `δ` belongs to example `i` alone):
//! - `Linear` (`z = a Wᵀ + b`): example `i`'s weight gradient is `δᵢ aᵢᵀ`, so
//!   `‖∇W‖² = ‖aᵢ‖²‖δᵢ‖²` and `‖∇b‖² = ‖δᵢ‖²`.
//! - `Conv2d`: with the patch matrix `Pᵢ` (`[L, k·k·C + 1]`: one row per output position, its
//!   receptive field followed by a 1 that carries the bias) and `δᵢ` as `[out, L]`, the weight and
//!   bias gradient together is `δᵢ Pᵢ` and `‖∇W‖² + ‖∇b‖² = ⟨Pᵢ Pᵢᵀ, δᵢᵀ δᵢ⟩ = Σ (δᵢ (Pᵢ Pᵢᵀ)) ⊙ δᵢ`
//!   (the "ghost norm": an `L × L` Gram matrix instead of an `out × (C·k·k + 1)` gradient).
//!
//! The norms over *all* layers give clip factors `cᵢ = min(1, C / (‖gᵢ‖ + 1e-6))` (Opacus'
//! formula), and the clipped sum `Σᵢ cᵢ gᵢ` of each layer is one product: `(c ⊙ δ)ᵀ a` (and
//! `δᵀ c` for the bias) for Linear, `(c ⊙ δ) P` over all examples and positions for Conv2d
//! (book-keeping: `a`, `P` and `δ` are kept from the single forward/backward pass; the
//! weight-gradient products of a normal backward pass are never computed, and no per-example
//! gradient is ever formed). The products accumulate (`addmm_`) into a caller-provided base, so
//! the Gaussian noise of a DP step is added by the matrix product itself, not by a separate pass.
//!
//! Measured costs that shaped this (2 cores): torch's CPU `im2col` runs one parallel region per
//! example, so patches come from one identity-kernel convolution (single-channel input) or one
//! strided copy of the channels-last input; the Gram matrices of the first digits-CNN layer are
//! 4 MB per batch, which is why the `confide-participant` binary keeps freed memory for reuse (its `cli/memory.rs`).

use confide_common::model::{Layer, ParameterInfo};
use tch::{Kind, Tensor};

use super::phases::Stopwatch;
use crate::model::{Network, Recorded, cross_entropy_sum};

/// Added to norms before dividing, as Opacus does, so that a zero gradient gets factor 1.
pub const NORM_EPSILON: f64 = 1e-6;

/// The result of one forward/backward pass over a batch.
#[derive(Debug)]
pub struct ClippedBatch {
    /// `Σᵢ cᵢ gᵢ` per parameter tensor, in layout order (scaled and added to a base, see
    /// [`clipped_gradient_sum_into`]).
    pub clipped_sum: Vec<Tensor>,
    /// Per-example gradient norms `‖gᵢ‖` before clipping, `[batch]`.
    pub norms: Tensor,
    /// Sum of the per-example losses.
    pub loss_sum: f64,
}

/// Per-example norms and the clipped gradient sum for a batch, with clip norm `clip_norm`
/// (`f64::INFINITY` = no clipping). The network must contain only Linear and Conv2d parameters
/// (see [`super::check_supported`]).
pub fn clipped_gradient_sum(net: &Network, x: &Tensor, y: &Tensor, clip_norm: f64) -> ClippedBatch {
    let base = || {
        Tensor::zeros(
            [net.num_parameters() as i64],
            (Kind::Float, tch::Device::Cpu),
        )
    };
    clipped_gradient_sum_into(net, x, y, clip_norm, 1.0, base, &mut Stopwatch::disabled())
}

/// `base + scale · Σᵢ cᵢ gᵢ`, with `base()` a flat `[num_parameters]` f32 tensor in layout order
/// whose storage the result takes over (each returned gradient is a view of it). `base` is called
/// after the forward and backward passes, right before the products that read it: a noise vector
/// drawn then is still in cache, and has not pushed the weights out of it before the forward pass.
/// Phases are charged to `clock` (the call to `base` as "noise draw").
pub fn clipped_gradient_sum_into(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    clip_norm: f64,
    scale: f64,
    base: impl FnOnce() -> Tensor,
    clock: &mut Stopwatch,
) -> ClippedBatch {
    let batch = y.size()[0];
    if batch == 0 {
        return ClippedBatch {
            clipped_sum: split_flat(&base(), net.layout()),
            norms: Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
            loss_sum: 0.0,
        };
    }
    let (logits, recorded) = net.forward_recording(x);
    let loss = cross_entropy_sum(&logits, y);
    clock.lap("forward");
    let outputs: Vec<&Tensor> = recorded.iter().map(|r| &r.output).collect();
    // Gradients with respect to the layer outputs only: autograd skips the weight-gradient products.
    let deltas = Tensor::run_backward(&[&loss], &outputs, false, false);
    let loss_sum = loss.double_value(&[]);
    clock.lap("backward");

    let _guard = tch::no_grad_guard();
    let prepared: Vec<Prepared> = recorded
        .iter()
        .zip(deltas)
        .map(|(r, d)| prepare(net, r, d))
        .collect();
    let sq_norms = prepared.iter().fold(
        Tensor::zeros([batch], (Kind::Float, tch::Device::Cpu)),
        |sum, p| sum + &p.sq_norm,
    );
    let norms = sq_norms.sqrt();
    // scale · min(1, C / (‖g‖ + ε)).
    let factors = ((&norms + NORM_EPSILON).reciprocal() * clip_norm).clamp_max(1.0) * scale;
    clock.lap("per-example norms");

    let mut grads = split_flat(&base(), net.layout());
    clock.lap("noise draw");
    for p in &prepared {
        let (w, b) = grads.split_at_mut(p.param + 1);
        p.add_clipped_sum(&factors, &mut w[p.param], &mut b[0]);
    }
    clock.lap("clipped sum");
    ClippedBatch {
        clipped_sum: grads,
        norms,
        loss_sum,
    }
}

/// Views of the flat vector `flat`, one per parameter, shaped like the parameter.
fn split_flat(flat: &Tensor, layout: &[ParameterInfo]) -> Vec<Tensor> {
    layout
        .iter()
        .map(|p| {
            let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
            flat.narrow(0, p.offset as i64, p.len() as i64)
                .view(shape.as_slice())
        })
        .collect()
}

/// What one layer keeps for the clipped sum, with its per-example squared gradient norms.
struct Prepared {
    /// Index of the layer's weight in the parameter list (its bias follows).
    param: usize,
    /// Linear: `a` `[B, in]`; Conv2d: the patches `P` as `[B·L, k·k·C + 1]`.
    activations: Tensor,
    /// Linear: `δ` `[B, out]`; Conv2d: `δ` as `[B, out, L]`.
    deltas: Tensor,
    sq_norm: Tensor,
}

/// What the ghost norm and the clipped sum of a stride-1 convolution need from its input: the
/// per-example Gram matrices `P Pᵀ` (`[B, L, L]`) of the patch matrices `P` (`[L, F]`, row `l`
/// the receptive field of output position `l`, then a constant 1 so that the bias rides along
/// with the weight), and all patches as one `[B·L, F]` matrix for the clipped-sum product.
/// Features are ordered (kernel row, kernel column, channel), then the 1. Built without im2col
/// (whose CPU kernel runs one parallel region per example): a single-channel input goes through
/// one convolution with the identity kernel (plus a constant output channel), a multi-channel one
/// through one copy of its padded channels-last form.
fn patches(a: &Tensor, k: i64, pad: i64) -> (Tensor, Tensor) {
    let size = a.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let (ho, wo) = (hp - k + 1, wp - k + 1);
    let features = k * k * c;
    let options = (Kind::Float, tch::Device::Cpu);
    if c == 1 {
        // Output channel j < k·k copies kernel position j; channel k·k is the constant 1.
        let kernel = Tensor::zeros([features + 1, 1, k, k], options);
        kernel
            .narrow(0, 0, features)
            .copy_(&Tensor::eye(features, options).view([features, 1, k, k]));
        let bias = Tensor::zeros([features + 1], options);
        let _ = bias.narrow(0, features, 1).fill_(1.0);
        // [B, F, L]: Pᵀ per example.
        let u = a
            .conv2d(&kernel, Some(&bias), [1, 1], [pad, pad], [1, 1], 1)
            .view([b, features + 1, ho * wo]);
        let gram = u.transpose(1, 2).bmm(&u);
        // [F, B·L] (rows of L contiguous values move as blocks), used transposed.
        let all = u.permute([1, 0, 2]).contiguous().view([features + 1, -1]);
        return (gram, all.tr());
    }
    // [B, Hp, Wp, C]: a kernel row's k·C values are then contiguous.
    let padded = a
        .permute([0, 2, 3, 1])
        .constant_pad_nd([0, 0, pad, pad, pad, pad])
        .contiguous();
    let p = Tensor::empty([b, ho * wo, features + 1], options);
    let stride = features + 1;
    p.as_strided(
        [b, ho, wo, k, k * c],
        [ho * wo * stride, wo * stride, stride, k * c, 1],
        None,
    )
    .copy_(&padded.as_strided(
        [b, ho, wo, k, k * c],
        [hp * wp * c, wp * c, c, wp * c, 1],
        None,
    ));
    let _ = p.narrow(2, features, 1).fill_(1.0);
    let gram = p.bmm(&p.transpose(1, 2));
    (gram, p.view([-1, features + 1]))
}

fn prepare(net: &Network, r: &Recorded, delta: Tensor) -> Prepared {
    let param = net
        .param_index(r.layer)
        .unwrap_or_else(|| unreachable!("recorded layers have parameters"));
    match net.layers()[r.layer] {
        Layer::Conv2d {
            kernel_size,
            padding,
            ..
        } => {
            let size = delta.size();
            let (batch, out) = (size[0], size[1]);
            let (gram, all_patches) = patches(&r.input, kernel_size as i64, padding as i64);
            let d = delta.view([batch, out, -1]);
            // ‖∇W‖² + ‖∇b‖² = Σ (δ (P Pᵀ)) ⊙ δ per example (P with its column of ones).
            let mut dg = d.bmm(&gram);
            let sq_norm = dg
                .g_mul_(&d)
                .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
            Prepared {
                param,
                activations: all_patches,
                deltas: d,
                sq_norm,
            }
        }
        _ => {
            // Linear on [B, in]: ‖∇W‖² + ‖∇b‖² = ‖δ‖²(‖a‖² + 1), each norm one fused reduction.
            let sq_a = r
                .input
                .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                .square();
            let sq_d = delta
                .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                .square();
            Prepared {
                param,
                activations: r.input.shallow_clone(),
                sq_norm: sq_d * (sq_a + 1.0),
                deltas: delta,
            }
        }
    }
}

impl Prepared {
    /// `weight += Σᵢ fᵢ ∇W`, `bias += Σᵢ fᵢ ∇b` with one matrix product for the weight.
    fn add_clipped_sum(&self, factors: &Tensor, weight: &mut Tensor, bias: &mut Tensor) {
        if self.deltas.dim() == 3 {
            let size = self.deltas.size();
            let (batch, out, positions) = (size[0], size[1], size[2]);
            // (f ⊙ δ) laid out as [out, B, L] in the same pass that scales it.
            let scaled = Tensor::empty([out, batch, positions], (Kind::Float, tch::Device::Cpu));
            let _ = self
                .deltas
                .permute([1, 0, 2])
                .mul_out(&scaled, &factors.view([1, -1, 1]));
            // [out, B·L] × [B·L, k·k·C + 1]: the weight in (row, column, channel) order
            // (reordered to the weight's [out, C, k, k]), then the bias.
            let sum = scaled.view([out, -1]).mm(&self.activations);
            let w = weight.size();
            let features = w[1] * w[2] * w[3];
            let _ = weight.g_add_(
                &sum.narrow(1, 0, features)
                    .view([out, w[2], w[3], w[1]])
                    .permute([0, 3, 1, 2]),
            );
            let _ = bias.g_add_(&sum.select(1, features));
        } else {
            // bias += δᵀ f, weight += (f ⊙ δ)ᵀ a.
            let _ = bias.addmv_(&self.deltas.tr(), factors);
            let scaled = &self.deltas * factors.view([-1, 1]);
            let _ = weight.addmm_(&scaled.tr(), &self.activations);
        }
    }
}
