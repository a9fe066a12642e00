//! The tch network built from a [`ModelSpec`], holding its parameters as plain tensors in the
//! spec's flat layout order (see `confide_common::model`).

use confide_common::model::{Layer, ModelError, ModelSpec, ParameterInfo};
use tch::{Kind, Tensor};

/// A network ready to run: the spec's layers and one tensor per entry of the parameter layout.
#[derive(Debug)]
pub struct Network {
    spec: ModelSpec,
    layers: Vec<Layer>,
    layout: Vec<ParameterInfo>,
    /// Parameters in layout order; they require gradients.
    params: Vec<Tensor>,
    /// For each layer, the index of its weight in `params` (bias follows), if it has parameters.
    first_param: Vec<Option<usize>>,
}

/// A parameterised layer's input and output saved during [`Network::forward_recording`].
#[derive(Debug)]
pub struct Recorded {
    /// Index into [`Network::layers`].
    pub layer: usize,
    /// Input activations `a` (no gradient needed).
    pub input: Tensor,
    /// Output `z = f(a; W, b)` before any non-linearity; backward gives `∂L/∂z` here.
    pub output: Tensor,
}

impl Network {
    /// Builds the network for `spec` with parameters from the flat vector `flat`.
    pub fn new(spec: &ModelSpec, flat: &[f32]) -> Result<Self, ModelError> {
        spec.validate()?;
        let layers = spec.layers();
        let layout = spec.parameter_layout();
        let mut first_param = Vec::with_capacity(layers.len());
        let mut count = 0;
        for (i, _) in layers.iter().enumerate() {
            let prefix = format!("{i}.");
            let n = layout
                .iter()
                .filter(|p| p.name.starts_with(&prefix))
                .count();
            first_param.push((n > 0).then_some(count));
            count += n;
        }
        let mut net = Network {
            spec: spec.clone(),
            layers,
            layout,
            params: Vec::new(),
            first_param,
        };
        net.set_flat(flat)?;
        Ok(net)
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn layout(&self) -> &[ParameterInfo] {
        &self.layout
    }

    /// Parameters in layout order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Parameters in layout order, for the optimiser.
    pub fn params_mut(&mut self) -> &mut [Tensor] {
        &mut self.params
    }

    /// Index in [`Self::params`] of the weight of layer `layer` (its bias is the next one).
    pub fn param_index(&self, layer: usize) -> Option<usize> {
        self.first_param.get(layer).copied().flatten()
    }

    /// Length of the flat parameter vector.
    pub fn num_parameters(&self) -> usize {
        self.layout.iter().map(ParameterInfo::len).sum()
    }

    /// Replaces all parameters from a flat vector in layout order.
    pub fn set_flat(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        let expected = self.num_parameters();
        if flat.len() != expected {
            return Err(ModelError::WrongLength {
                expected,
                actual: flat.len(),
            });
        }
        self.params = self
            .layout
            .iter()
            .map(|p| {
                let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
                Tensor::from_slice(&flat[p.offset..p.offset + p.len()])
                    .reshape(&shape)
                    .set_requires_grad(true)
            })
            .collect();
        Ok(())
    }

    /// The parameters as one flat vector in layout order.
    pub fn to_flat(&self) -> Vec<f32> {
        let _guard = tch::no_grad_guard();
        let flat = Tensor::cat(
            &self
                .params
                .iter()
                .map(|p| p.reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        // A contiguous f32 CPU tensor always converts.
        Vec::<f32>::try_from(&flat).unwrap_or_default()
    }

    /// Reshapes a `[batch, features]` input to the spec's input shape.
    fn reshape_input(&self, x: &Tensor) -> Tensor {
        let mut shape = vec![x.size()[0]];
        shape.extend(self.spec.input_shape().iter().map(|&d| d as i64));
        x.reshape(&shape)
    }

    /// Logits for a `[batch, features]` input.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.reshape_input(x);
        for i in 0..self.layers.len() {
            h = self.apply(i, &h);
        }
        h
    }

    /// Logits, plus the input and output of every Linear and Conv2d layer (for ghost clipping).
    pub fn forward_recording(&self, x: &Tensor) -> (Tensor, Vec<Recorded>) {
        let mut h = self.reshape_input(x);
        let mut recorded = Vec::new();
        for i in 0..self.layers.len() {
            let out = self.apply(i, &h);
            if matches!(self.layers[i], Layer::Linear { .. } | Layer::Conv2d { .. }) {
                recorded.push(Recorded {
                    layer: i,
                    input: h.detach(),
                    output: out.shallow_clone(),
                });
            }
            h = out;
        }
        (h, recorded)
    }

    fn apply(&self, i: usize, h: &Tensor) -> Tensor {
        let p = |k: usize| &self.params[self.first_param[i].unwrap_or(0) + k];
        match self.layers[i] {
            Layer::Linear { .. } => h.linear(p(0), Some(p(1))),
            Layer::Conv2d { padding, .. } => {
                let pad = padding as i64;
                h.conv2d(p(0), Some(p(1)), [1, 1], [pad, pad], [1, 1], 1)
            }
            Layer::MaxPool2d { kernel_size } => {
                let k = kernel_size as i64;
                h.max_pool2d([k, k], [k, k], [0, 0], [1, 1], false)
            }
            Layer::AvgPool2d { kernel_size } => {
                let k = kernel_size as i64;
                h.avg_pool2d([k, k], [k, k], [0, 0], false, true, None)
            }
            Layer::Flatten => h.flatten(1, -1),
            Layer::LayerNorm { features } => {
                h.layer_norm([features as i64], Some(p(0)), Some(p(1)), 1e-5, false)
            }
            Layer::Relu => h.relu(),
            Layer::Tanh => h.tanh(),
            Layer::Sigmoid => h.sigmoid(),
        }
    }

    /// Fraction of correctly classified records and mean cross-entropy loss on `(x, y)`.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor) -> (f64, f64) {
        let _guard = tch::no_grad_guard();
        let n = y.size()[0];
        if n == 0 {
            return (0.0, 0.0);
        }
        let logits = self.forward(x);
        let loss = cross_entropy_sum(&logits, y).double_value(&[]) / n as f64;
        let correct = logits
            .argmax(-1, false)
            .eq_tensor(y)
            .to_kind(Kind::Float)
            .sum(Kind::Double);
        (correct.double_value(&[]) / n as f64, loss)
    }
}

impl Network {
    /// Per record of `(x, y)`: whether the prediction is right, and its softmax cross-entropy loss (for a
    /// federated evaluation's clamped sums).
    pub fn per_record(&self, x: &Tensor, y: &Tensor) -> (Vec<bool>, Vec<f64>) {
        let _guard = tch::no_grad_guard();
        if y.size()[0] == 0 {
            return (Vec::new(), Vec::new());
        }
        let logits = self.forward(x);
        let losses = logits
            .cross_entropy_loss(y, None::<Tensor>, tch::Reduction::None, -100, 0.0)
            .to_kind(Kind::Double);
        let correct = logits.argmax(-1, false).eq_tensor(y).to_kind(Kind::Int64);
        let losses = Vec::<f64>::try_from(&losses).unwrap_or_default();
        let correct = Vec::<i64>::try_from(&correct)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c != 0)
            .collect();
        (correct, losses)
    }
}

/// Sum over the batch of the softmax cross-entropy losses.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.cross_entropy_loss(targets, None::<Tensor>, tch::Reduction::Sum, -100, 0.0)
}

/// A `[n, d]` f32 tensor from row-major features.
pub fn features_tensor(features: &[f32], d: usize) -> Tensor {
    Tensor::from_slice(features).reshape([(features.len() / d.max(1)) as i64, d as i64])
}

/// A `[n]` i64 tensor of labels.
pub fn labels_tensor(labels: &[i64]) -> Tensor {
    Tensor::from_slice(labels)
}
