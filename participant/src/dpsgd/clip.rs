//! Per-example gradient clipping without per-example gradients: ghost norm + book-keeping.
//!
//! For a parameterised layer with input activations `a` and output gradients `δ = ∂L/∂z` (the loss
//! `L` being the *sum* of per-example losses, so row `i` of `δ` belongs to example `i` alone):
//! - `Linear` (`z = a Wᵀ + b`): example `i`'s weight gradient is `δᵢ aᵢᵀ`, so
//!   `‖∇W‖² = ‖aᵢ‖²‖δᵢ‖²` and `‖∇b‖² = ‖δᵢ‖²`.
//! - `Conv2d`: with `Uᵢ = im2col(aᵢ)` (`[C·k·k, L]`) and `δᵢ` as `[out, L]`, the weight gradient
//!   is `δᵢ Uᵢᵀ` and `‖∇W‖² = ⟨Uᵢᵀ Uᵢ, δᵢᵀ δᵢ⟩` (the "ghost norm": two `L × L` Gram matrices
//!   instead of an `out × C·k·k` gradient); `∇b = Σ_l δᵢ[:, l]`.
//!
//! The norms over *all* layers give clip factors `cᵢ = min(1, C / (‖gᵢ‖ + 1e-6))` (Opacus'
//! formula), and the clipped sum `Σᵢ cᵢ gᵢ` of each layer is one product: `(c ⊙ δ)ᵀ a` for Linear,
//! `(c ⊙ δ) Uᵀ` over all examples and positions for Conv2d (book-keeping: `a`, `U` and `δ` are
//! kept from the single forward/backward pass; the weight-gradient products of a normal backward
//! pass are never computed).

use confide_common::model::Layer;
use tch::{Kind, Tensor};

use crate::model::{Network, Recorded, cross_entropy_sum};

/// Added to norms before dividing, as Opacus does, so that a zero gradient gets factor 1.
pub const NORM_EPSILON: f64 = 1e-6;

/// The result of one forward/backward pass over a batch.
#[derive(Debug)]
pub struct ClippedBatch {
    /// `Σᵢ cᵢ gᵢ` per parameter tensor, in layout order.
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
    let batch = y.size()[0];
    if batch == 0 {
        return ClippedBatch {
            clipped_sum: net.params().iter().map(Tensor::zeros_like).collect(),
            norms: Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
            loss_sum: 0.0,
        };
    }
    let (logits, recorded) = net.forward_recording(x);
    let loss = cross_entropy_sum(&logits, y);
    let outputs: Vec<&Tensor> = recorded.iter().map(|r| &r.output).collect();
    // Gradients with respect to the layer outputs only: autograd skips the weight-gradient products.
    let deltas = Tensor::run_backward(&[&loss], &outputs, false, false);
    let loss_sum = loss.double_value(&[]);

    let _guard = tch::no_grad_guard();
    let prepared: Vec<Prepared> = recorded
        .iter()
        .zip(deltas)
        .map(|(r, d)| prepare(net, r, d))
        .collect();
    let mut sq_norms = Tensor::zeros([batch], (Kind::Float, tch::Device::Cpu));
    for p in &prepared {
        sq_norms += &p.sq_norm;
    }
    let norms = sq_norms.sqrt();
    let factors = ((&norms + NORM_EPSILON).reciprocal() * clip_norm).clamp_max(1.0);

    let mut clipped_sum: Vec<Option<Tensor>> = net.params().iter().map(|_| None).collect();
    for p in &prepared {
        let (w, b) = p.clipped_sum(&factors);
        clipped_sum[p.param] = Some(w);
        clipped_sum[p.param + 1] = Some(b);
    }
    let clipped_sum = clipped_sum
        .into_iter()
        .zip(net.params())
        .map(|(g, p)| g.unwrap_or_else(|| p.zeros_like()))
        .collect();
    ClippedBatch {
        clipped_sum,
        norms,
        loss_sum,
    }
}

/// What one layer keeps for the clipped sum, with its per-example squared gradient norms.
struct Prepared {
    /// Index of the layer's weight in the parameter list.
    param: usize,
    /// Linear: `a` `[B, in]`; Conv2d: `U` as `[B·L, C·k·k]`.
    activations: Tensor,
    /// Linear: `δ` `[B, out]`; Conv2d: `δ` as `[B, out, L]`.
    deltas: Tensor,
    weight_shape: Vec<i64>,
    sq_norm: Tensor,
}

fn prepare(net: &Network, r: &Recorded, delta: Tensor) -> Prepared {
    let param = net
        .param_index(r.layer)
        .unwrap_or_else(|| unreachable!("recorded layers have parameters"));
    let weight_shape = net.params()[param].size();
    match net.layers()[r.layer] {
        Layer::Conv2d {
            kernel_size,
            padding,
            ..
        } => {
            let (k, pad) = (kernel_size as i64, padding as i64);
            let batch = delta.size()[0];
            let out = delta.size()[1];
            // U: [B, C·k·k, L]; δ: [B, out, L].
            let u = r.input.im2col([k, k], [1, 1], [pad, pad], [1, 1]);
            let d = delta.reshape([batch, out, -1]);
            let gram_u = u.transpose(1, 2).bmm(&u);
            let gram_d = d.transpose(1, 2).bmm(&d);
            let sq_w = (gram_u * gram_d).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
            let sq_b = d
                .sum_dim_intlist([2i64].as_slice(), false, Kind::Float)
                .square()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            let ckk = u.size()[1];
            Prepared {
                param,
                activations: u.transpose(1, 2).reshape([-1, ckk]),
                deltas: d,
                weight_shape,
                sq_norm: sq_w + sq_b,
            }
        }
        _ => {
            // Linear on [B, in].
            let sq_a = r
                .input
                .square()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            let sq_d = delta
                .square()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            Prepared {
                param,
                activations: r.input.shallow_clone(),
                weight_shape,
                sq_norm: &sq_d * (sq_a + 1.0),
                deltas: delta,
            }
        }
    }
}

impl Prepared {
    /// `(Σᵢ cᵢ ∇W, Σᵢ cᵢ ∇b)` in one product for the weight.
    fn clipped_sum(&self, factors: &Tensor) -> (Tensor, Tensor) {
        if self.deltas.dim() == 3 {
            let out = self.deltas.size()[1];
            let scaled = &self.deltas * factors.reshape([-1, 1, 1]);
            let bias = scaled.sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float);
            // [out, B·L] × [B·L, C·k·k].
            let flat = scaled.transpose(0, 1).reshape([out, -1]);
            let weight = flat.mm(&self.activations).reshape(&self.weight_shape);
            (weight, bias)
        } else {
            let scaled = &self.deltas * factors.reshape([-1, 1]);
            let bias = scaled.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
            let weight = scaled.tr().mm(&self.activations);
            (weight, bias)
        }
    }
}
