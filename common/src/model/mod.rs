//! Model specifications and flat parameter vectors.
//!
//! A [`ModelSpec`] is the JSON description of a model that every party agrees on: the coordinator
//! stores it with a study, the participant builds a tch network from it, and the secure aggregation
//! works on the model's parameters flattened into one `f32` vector.
//!
//! # Flat parameter order
//! [`ModelSpec::parameter_layout`] is *the* order of that vector and is stable: parameters appear in
//! the order of the layers ([`ModelSpec::layers`]), and within a layer the weight precedes the bias.
//! Each tensor is flattened row-major (C order) in torch's own shape convention:
//! `Linear` weight `[out, in]`, bias `[out]`; `Conv2d` weight `[out, in, k, k]`, bias `[out]`;
//! `LayerNorm` weight and bias `[features]`. Names are `<layer index>.<weight|bias>` where the layer
//! index counts all layers of [`ModelSpec::layers`], parameterless ones included (as torch's
//! `nn.Sequential` names them).
//!
//! Everything here is pure: no libtorch, no files. The coordinator (which does not link libtorch)
//! uses [`ModelSpec::initial_parameters`], [`encode_safetensors`] and [`decode_safetensors`] to
//! create, store and serve model versions.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

mod weights;
pub use weights::{
    SPEC_METADATA_KEY, decode_safetensors, encode_safetensors, spec_from_safetensors,
};

/// Largest number of parameters a spec may declare (guards allocation from untrusted specs).
pub const MAX_PARAMETERS: usize = 1 << 28;
/// Largest width of any single dimension in a spec.
pub const MAX_DIMENSION: usize = 1 << 20;

/// Element-wise non-linearity between layers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

/// One convolution block of a [`ModelSpec::Cnn`]: `Conv2d(k×k, stride 1, padding)` → activation →
/// optional `MaxPool2d(pool×pool, stride pool)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvBlock {
    /// Output channels of the convolution.
    pub out_channels: usize,
    /// The square kernel's side k.
    pub kernel_size: usize,
    /// Zero padding on each side (default 0).
    #[serde(default)]
    pub padding: usize,
    /// Max-pooling window (and stride) after the activation; `None` for no pooling.
    #[serde(default)]
    pub pool: Option<usize>,
}

/// A model every party can build. Classification with `num_classes` outputs (logits; the loss is
/// softmax cross-entropy), inputs are `input_dim` standardised features (for a CNN, `channels ×
/// height × width` features in C order).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Multinomial logistic regression: one `Linear(input_dim, num_classes)`.
    LogisticRegression {
        /// Number of input features.
        input_dim: usize,
        /// Number of classes (outputs).
        num_classes: usize,
    },
    /// Fully connected network: `Linear` + activation per hidden size, then `Linear(…, num_classes)`.
    Mlp {
        /// Number of input features.
        input_dim: usize,
        /// Width of each hidden layer, in order.
        hidden: Vec<usize>,
        /// The non-linearity after each hidden layer.
        activation: Activation,
        /// Number of classes (outputs).
        num_classes: usize,
    },
    /// Small convolutional network: conv blocks, flatten, hidden `Linear` layers, output `Linear`.
    Cnn {
        /// `[channels, height, width]` of one input.
        input_shape: [usize; 3],
        /// The convolution blocks, in order.
        conv: Vec<ConvBlock>,
        /// Width of each hidden linear layer after flattening, in order (default none).
        #[serde(default)]
        hidden: Vec<usize>,
        /// The non-linearity after each convolution and hidden layer.
        activation: Activation,
        /// Number of classes (outputs).
        num_classes: usize,
    },
    /// An explicit layer list, for models the shorthand kinds do not cover. Not every layer here is
    /// supported by the DP-SGD clipper (see the participant's validator).
    Sequential {
        /// Shape of one input without the batch dimension: `[features]` or `[channels, height, width]`.
        input_shape: Vec<usize>,
        /// The layers, applied in order.
        layers: Vec<Layer>,
    },
}

/// One layer of a model, in torch's vocabulary.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// Fully connected: `y = W x + b`.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// 2-d convolution (stride 1).
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// The square kernel's side.
        kernel_size: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// Max pooling with stride equal to the window.
    MaxPool2d {
        /// The square window's side.
        kernel_size: usize,
    },
    /// Average pooling with stride equal to the window.
    AvgPool2d {
        /// The square window's side.
        kernel_size: usize,
    },
    /// Flattens `[C, H, W]` to `[C·H·W]`.
    Flatten,
    /// Layer normalisation over the last dimension (`features`), with affine weight and bias.
    LayerNorm {
        /// Size of the normalised last dimension.
        features: usize,
    },
    Relu,
    Tanh,
    Sigmoid,
}

/// The fully connected part shared by the MLP and the CNN: `hidden` linear layers, each followed by the activation,
/// then the output layer, starting from `width` features.
fn push_dense_head(
    layers: &mut Vec<Layer>,
    mut width: usize,
    hidden: &[usize],
    activation: Activation,
    num_classes: usize,
) {
    for &h in hidden {
        layers.push(Layer::Linear {
            in_features: width,
            out_features: h,
        });
        layers.push(Layer::activation(activation));
        width = h;
    }
    layers.push(Layer::Linear {
        in_features: width,
        out_features: num_classes,
    });
}

impl Layer {
    fn activation(a: Activation) -> Layer {
        match a {
            Activation::Relu => Layer::Relu,
            Activation::Tanh => Layer::Tanh,
            Activation::Sigmoid => Layer::Sigmoid,
        }
    }

    /// Human-readable name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Layer::Linear { .. } => "linear",
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool2d { .. } => "max_pool2d",
            Layer::AvgPool2d { .. } => "avg_pool2d",
            Layer::Flatten => "flatten",
            Layer::LayerNorm { .. } => "layer_norm",
            Layer::Relu => "relu",
            Layer::Tanh => "tanh",
            Layer::Sigmoid => "sigmoid",
        }
    }

    /// Trainable parameters of this layer, weight first: `(suffix, shape, fan_in)`.
    fn parameters(&self) -> Vec<(&'static str, Vec<usize>, Init)> {
        match *self {
            Layer::Linear {
                in_features,
                out_features,
            } => vec![
                (
                    "weight",
                    vec![out_features, in_features],
                    Init::Uniform(in_features),
                ),
                ("bias", vec![out_features], Init::Uniform(in_features)),
            ],
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                ..
            } => {
                let fan_in = in_channels * kernel_size * kernel_size;
                vec![
                    (
                        "weight",
                        vec![out_channels, in_channels, kernel_size, kernel_size],
                        Init::Uniform(fan_in),
                    ),
                    ("bias", vec![out_channels], Init::Uniform(fan_in)),
                ]
            }
            Layer::LayerNorm { features } => vec![
                ("weight", vec![features], Init::Ones),
                ("bias", vec![features], Init::Zeros),
            ],
            _ => Vec::new(),
        }
    }
}

/// Initialisation scheme of one parameter tensor (torch's defaults).
#[derive(Debug, Clone, Copy)]
enum Init {
    /// `U(-1/√fan_in, 1/√fan_in)`: torch's `kaiming_uniform_(a=√5)` for Linear/Conv weights and its
    /// bias initialisation reduce to this bound.
    Uniform(usize),
    Ones,
    Zeros,
}

/// One named tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat vector.
    pub offset: usize,
}

impl ParameterInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with a zero dimension (never produced by a valid spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a spec or a parameter file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    #[error("invalid model spec JSON: {0}")]
    Json(String),
    #[error("invalid model spec: {0}")]
    Invalid(String),
    #[error("layer {index} ({layer}): {reason}")]
    Layer {
        index: usize,
        layer: &'static str,
        reason: String,
    },
    #[error("parameter vector has {actual} values, the model has {expected} parameters")]
    WrongLength { expected: usize, actual: usize },
    #[error("parameter file is not valid safetensors: {0}")]
    Safetensors(String),
    #[error("parameter file is missing tensor '{0}'")]
    MissingTensor(String),
    #[error("parameter file has tensor '{0}', which the model does not have")]
    UnexpectedTensor(String),
    #[error("tensor '{name}' has shape {actual:?}, the model expects {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor '{name}' has dtype {actual}, the model expects F32")]
    WrongDtype { name: String, actual: String },
    #[error("tensor '{0}' contains a NaN or infinite value")]
    NonFinite(String),
}

impl ModelSpec {
    /// Parses and validates a spec from JSON.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let spec: ModelSpec =
            serde_json::from_str(json).map_err(|e| ModelError::Json(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Canonical JSON of the spec.
    pub fn to_json(&self) -> String {
        // Serialising a plain enum of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            ModelSpec::LogisticRegression { num_classes, .. }
            | ModelSpec::Mlp { num_classes, .. }
            | ModelSpec::Cnn { num_classes, .. } => *num_classes,
            ModelSpec::Sequential { layers, .. } => layers
                .iter()
                .rev()
                .find_map(|l| match l {
                    Layer::Linear { out_features, .. } => Some(*out_features),
                    _ => None,
                })
                .unwrap_or(0),
        }
    }

    /// Shape of one input (without the batch dimension).
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            ModelSpec::LogisticRegression { input_dim, .. } | ModelSpec::Mlp { input_dim, .. } => {
                vec![*input_dim]
            }
            ModelSpec::Cnn { input_shape, .. } => input_shape.to_vec(),
            ModelSpec::Sequential { input_shape, .. } => input_shape.clone(),
        }
    }

    /// Number of input features (product of [`Self::input_shape`]).
    pub fn input_dim(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// The model as an explicit layer list (what the participant builds).
    pub fn layers(&self) -> Vec<Layer> {
        match self {
            ModelSpec::LogisticRegression {
                input_dim,
                num_classes,
            } => vec![Layer::Linear {
                in_features: *input_dim,
                out_features: *num_classes,
            }],
            ModelSpec::Mlp {
                input_dim,
                hidden,
                activation,
                num_classes,
            } => {
                let mut layers = Vec::new();
                push_dense_head(&mut layers, *input_dim, hidden, *activation, *num_classes);
                layers
            }
            ModelSpec::Cnn {
                input_shape,
                conv,
                hidden,
                activation,
                num_classes,
            } => {
                let [mut channels, mut height, mut width] = *input_shape;
                let mut layers = Vec::new();
                for block in conv {
                    layers.push(Layer::Conv2d {
                        in_channels: channels,
                        out_channels: block.out_channels,
                        kernel_size: block.kernel_size,
                        padding: block.padding,
                    });
                    layers.push(Layer::activation(*activation));
                    channels = block.out_channels;
                    // Saturating: an invalid geometry is reported by `validate`, not here.
                    height = (height + 2 * block.padding + 1).saturating_sub(block.kernel_size);
                    width = (width + 2 * block.padding + 1).saturating_sub(block.kernel_size);
                    if let Some(pool) = block.pool {
                        layers.push(Layer::MaxPool2d { kernel_size: pool });
                        height /= pool.max(1);
                        width /= pool.max(1);
                    }
                }
                layers.push(Layer::Flatten);
                push_dense_head(
                    &mut layers,
                    channels * height * width,
                    hidden,
                    *activation,
                    *num_classes,
                );
                layers
            }
            ModelSpec::Sequential { layers, .. } => layers.clone(),
        }
    }

    /// Checks that the layers fit together (shapes chain from the input to `[num_classes]` logits),
    /// that every size is positive and bounded, and that the model has at least one parameter.
    pub fn validate(&self) -> Result<(), ModelError> {
        let input = self.input_shape();
        if input.is_empty() || input.len() == 2 || input.len() > 3 {
            return Err(ModelError::Invalid(format!(
                "input shape must be [features] or [channels, height, width], got {input:?}"
            )));
        }
        if let Some(&bad) = input.iter().find(|&&d| d == 0 || d > MAX_DIMENSION) {
            return Err(ModelError::Invalid(format!(
                "input dimensions must be between 1 and {MAX_DIMENSION}, got {bad}"
            )));
        }
        if let ModelSpec::Cnn { conv, .. } = self
            && conv.is_empty()
        {
            return Err(ModelError::Invalid(
                "a cnn needs at least one conv block".into(),
            ));
        }
        let mut shape = input;
        let mut total: usize = 0;
        for (index, layer) in self.layers().iter().enumerate() {
            let err = |reason: String| ModelError::Layer {
                index,
                layer: layer.type_name(),
                reason,
            };
            let positive = |what: &str, v: usize| {
                if v == 0 || v > MAX_DIMENSION {
                    Err(err(format!(
                        "{what} must be between 1 and {MAX_DIMENSION}, got {v}"
                    )))
                } else {
                    Ok(())
                }
            };
            shape = match *layer {
                Layer::Linear {
                    in_features,
                    out_features,
                } => {
                    positive("in_features", in_features)?;
                    positive("out_features", out_features)?;
                    if shape != [in_features] {
                        return Err(err(format!(
                            "expects input [{in_features}], the previous layer gives {shape:?}"
                        )));
                    }
                    vec![out_features]
                }
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size,
                    padding,
                } => {
                    positive("in_channels", in_channels)?;
                    positive("out_channels", out_channels)?;
                    positive("kernel_size", kernel_size)?;
                    if padding > MAX_DIMENSION {
                        return Err(err(format!("padding {padding} is too large")));
                    }
                    let [c, h, w] = shape[..] else {
                        return Err(err(format!(
                            "expects a [channels, height, width] input, the previous layer gives {shape:?}"
                        )));
                    };
                    if c != in_channels {
                        return Err(err(format!(
                            "expects {in_channels} input channels, the previous layer gives {c}"
                        )));
                    }
                    if h + 2 * padding < kernel_size || w + 2 * padding < kernel_size {
                        return Err(err(format!(
                            "kernel {kernel_size}×{kernel_size} does not fit a {h}×{w} input with padding {padding}"
                        )));
                    }
                    vec![
                        out_channels,
                        h + 2 * padding + 1 - kernel_size,
                        w + 2 * padding + 1 - kernel_size,
                    ]
                }
                Layer::MaxPool2d { kernel_size } | Layer::AvgPool2d { kernel_size } => {
                    positive("kernel_size", kernel_size)?;
                    let [c, h, w] = shape[..] else {
                        return Err(err(format!(
                            "expects a [channels, height, width] input, the previous layer gives {shape:?}"
                        )));
                    };
                    if h < kernel_size || w < kernel_size {
                        return Err(err(format!(
                            "window {kernel_size}×{kernel_size} does not fit a {h}×{w} input"
                        )));
                    }
                    vec![c, h / kernel_size, w / kernel_size]
                }
                Layer::Flatten => vec![shape.iter().product()],
                Layer::LayerNorm { features } => {
                    positive("features", features)?;
                    if shape.last() != Some(&features) {
                        return Err(err(format!(
                            "normalises {features} features, the previous layer gives {shape:?}"
                        )));
                    }
                    shape
                }
                Layer::Relu | Layer::Tanh | Layer::Sigmoid => shape,
            };
            for (_, pshape, _) in layer.parameters() {
                total = pshape
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .and_then(|n| total.checked_add(n))
                    .filter(|&t| t <= MAX_PARAMETERS)
                    .ok_or_else(|| {
                        err(format!("model has more than {MAX_PARAMETERS} parameters"))
                    })?;
            }
        }
        if shape.len() != 1 || shape[0] < 2 {
            return Err(ModelError::Invalid(format!(
                "the last layer must give [num_classes] logits with at least 2 classes, got {shape:?}"
            )));
        }
        if total == 0 {
            return Err(ModelError::Invalid(
                "model has no trainable parameters".into(),
            ));
        }
        Ok(())
    }

    /// The flat parameter order (see the module documentation): names, shapes and offsets.
    pub fn parameter_layout(&self) -> Vec<ParameterInfo> {
        let mut offset = 0;
        let mut out = Vec::new();
        for (index, layer) in self.layers().iter().enumerate() {
            for (suffix, shape, _) in layer.parameters() {
                let info = ParameterInfo {
                    name: format!("{index}.{suffix}"),
                    shape,
                    offset,
                };
                offset += info.len();
                out.push(info);
            }
        }
        out
    }

    /// Length of the flat parameter vector.
    pub fn num_parameters(&self) -> usize {
        self.parameter_layout().iter().map(ParameterInfo::len).sum()
    }

    /// Initial parameters with torch's default scheme (`U(±1/√fan_in)` for Linear and Conv2d
    /// weights and biases, ones/zeros for LayerNorm), drawn from ChaCha20 seeded with `seed`.
    pub fn initial_parameters(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(self.num_parameters());
        for layer in self.layers() {
            for (_, shape, init) in layer.parameters() {
                let n: usize = shape.iter().product();
                match init {
                    Init::Uniform(fan_in) => {
                        let bound = 1.0 / (fan_in as f64).sqrt();
                        out.extend(
                            (0..n).map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32),
                        );
                    }
                    Init::Ones => out.extend(std::iter::repeat_n(1.0f32, n)),
                    Init::Zeros => out.extend(std::iter::repeat_n(0.0f32, n)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn mlp() -> ModelSpec {
        ModelSpec::Mlp {
            input_dim: 4,
            hidden: vec![3],
            activation: Activation::Relu,
            num_classes: 2,
        }
    }

    pub(super) fn digits_cnn() -> ModelSpec {
        ModelSpec::from_json(
            r#"{"kind":"cnn","input_shape":[1,8,8],"activation":"relu","num_classes":10,
                "conv":[{"out_channels":16,"kernel_size":3,"padding":1,"pool":2},
                        {"out_channels":32,"kernel_size":3,"padding":1,"pool":2}],
                "hidden":[32]}"#,
        )
        .unwrap()
    }

    #[test]
    fn layout_is_layer_order_weight_then_bias() {
        let layout = mlp().parameter_layout();
        let names: Vec<_> = layout.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
        assert_eq!(layout[0].shape, [3, 4]);
        assert_eq!(layout[2].offset, 15);
        assert_eq!(mlp().num_parameters(), 12 + 3 + 6 + 2);
    }

    #[test]
    fn cnn_shapes_chain() {
        let spec = digits_cnn();
        let layout = spec.parameter_layout();
        assert_eq!(layout[0].shape, [16, 1, 3, 3]);
        assert_eq!(layout[2].shape, [32, 16, 3, 3]);
        // 8×8 → pool 4×4 → pool 2×2 with 32 channels = 128 features.
        assert_eq!(layout[4].shape, [32, 128]);
        assert_eq!(layout[6].shape, [10, 32]);
        assert_eq!(spec.input_dim(), 64);
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let spec = digits_cnn();
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        let err = ModelSpec::from_json(
            r#"{"kind":"logistic_regression","input_dim":3,"num_classes":2,"x":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = ModelSpec::from_json(r#"{"kind":"transformer"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn validation_errors_are_specific() {
        let bad = ModelSpec::Mlp {
            input_dim: 4,
            hidden: vec![0],
            activation: Activation::Tanh,
            num_classes: 2,
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("layer 0 (linear)") && err.contains("out_features"),
            "{err}"
        );

        let one_class = ModelSpec::LogisticRegression {
            input_dim: 4,
            num_classes: 1,
        };
        assert!(
            one_class
                .validate()
                .unwrap_err()
                .to_string()
                .contains("at least 2 classes")
        );

        let too_big_kernel = ModelSpec::from_json(
            r#"{"kind":"cnn","input_shape":[1,4,4],"activation":"relu","num_classes":2,
                "conv":[{"out_channels":2,"kernel_size":5}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(too_big_kernel.contains("does not fit"), "{too_big_kernel}");

        let mismatch = ModelSpec::Sequential {
            input_shape: vec![5],
            layers: vec![Layer::Linear {
                in_features: 4,
                out_features: 2,
            }],
        };
        let err = mismatch.validate().unwrap_err().to_string();
        assert!(err.contains("expects input [4]"), "{err}");

        let huge = ModelSpec::Mlp {
            input_dim: 1 << 20,
            hidden: vec![1 << 20],
            activation: Activation::Relu,
            num_classes: 2,
        };
        assert!(
            huge.validate()
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
    }

    #[test]
    fn initial_parameters_follow_torch_bounds_and_seed() {
        let spec = mlp();
        let a = spec.initial_parameters(1);
        assert_eq!(a.len(), spec.num_parameters());
        assert_eq!(a, spec.initial_parameters(1));
        assert_ne!(a, spec.initial_parameters(2));
        let bound0 = 1.0 / 2.0; // fan_in 4
        assert!(a[..15].iter().all(|x| x.abs() <= bound0));
        let bound1 = 1.0 / 3f32.sqrt(); // fan_in 3
        assert!(a[15..].iter().all(|x| x.abs() <= bound1));
        let spread = a[..12].iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            spread > 0.3,
            "weights should fill the range, max |w| = {spread}"
        );
    }
}
