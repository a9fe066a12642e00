//! Local training on one site's records: the loop the CLI's `train` runs and the participant agent
//! calls each round ([`train_round`]).

use confide_common::model::{ModelError, ModelSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use thiserror::Error;

use crate::data::Dataset;
use crate::dp::{DpError, GaussianNoise, PrivacyEvent};
use crate::dpsgd::{
    DpSgdParams, Optimizer, OptimizerConfig, StepStats, UnsupportedLayer, check_supported,
    noisy_gradient, plain_gradient, poisson_sample,
};
use crate::model::{Network, features_tensor, labels_tensor};

/// Why training could not start. Nothing is trained when any of these is returned.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedLayer),
    #[error("the data has {found} features, the model expects {expected}")]
    FeatureMismatch { expected: usize, found: usize },
    #[error("the training data is empty")]
    NoData,
    #[error("a label is outside 0..{num_classes}, the model's classes")]
    LabelOutOfRange { num_classes: usize },
    #[error("invalid DP-SGD parameters: {0}")]
    InvalidParams(String),
    #[error(transparent)]
    Dp(#[from] DpError),
}

/// How the model is trained: DP-SGD, or plain minibatch SGD for a non-private baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Private(DpSgdParams),
    /// Poisson batches with rate `sampling_rate`, unclipped mean gradients, no noise.
    /// **No privacy guarantee**: for baselines only.
    NonPrivate {
        sampling_rate: f64,
    },
}

impl Mode {
    pub fn sampling_rate(&self) -> f64 {
        match self {
            Mode::Private(p) => p.sampling_rate,
            Mode::NonPrivate { sampling_rate } => *sampling_rate,
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        let q = self.sampling_rate();
        if !(q > 0.0 && q <= 1.0) {
            return Err(TrainError::InvalidParams(format!(
                "sampling rate must be in (0, 1], got {q}"
            )));
        }
        if let Mode::Private(p) = self {
            if p.clip_norm.is_nan() || p.clip_norm <= 0.0 {
                return Err(TrainError::InvalidParams(format!(
                    "clip norm must be > 0, got {}",
                    p.clip_norm
                )));
            }
            if !(p.noise_multiplier >= 0.0 && p.noise_multiplier.is_finite()) {
                return Err(TrainError::InvalidParams(format!(
                    "noise multiplier must be a finite number ≥ 0, got {}",
                    p.noise_multiplier
                )));
            }
            if p.noise_multiplier > 0.0 && !p.clip_norm.is_finite() {
                return Err(TrainError::InvalidParams(
                    "noise needs a finite clip norm".into(),
                ));
            }
            if !(p.expected_batch_size.is_finite() && p.expected_batch_size > 0.0) {
                return Err(TrainError::InvalidParams(format!(
                    "expected batch size must be a finite number > 0, got {}",
                    p.expected_batch_size
                )));
            }
        }
        Ok(())
    }
}

/// What a run has spent on its records.
#[derive(Debug, Clone, PartialEq)]
pub enum PrivacySpent {
    /// A differential-privacy guarantee: ε follows from these events (none before the first step: ε = 0).
    Events(Vec<PrivacyEvent>),
    /// No guarantee at all, ε = ∞: a non-private baseline, or clipping without noise (σ = 0).
    NoGuarantee,
}

/// A model being trained on one site's records.
pub struct LocalTrainer {
    net: Network,
    optimizer: Optimizer,
    mode: Mode,
    x: Tensor,
    y: Tensor,
    n: usize,
    noise: GaussianNoise,
    sampler: ChaCha20Rng,
    steps: u64,
}

impl std::fmt::Debug for LocalTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTrainer")
            .field("mode", &self.mode)
            .field("records", &self.n)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl LocalTrainer {
    /// Checks everything (spec, clipper support, data shape and labels, parameters) and builds the
    /// trainer. `noise` should come from [`GaussianNoise::from_os_entropy`]; the batch sampler is
    /// seeded from the OS as well unless `sampler_seed` is given (tests, reproducible baselines).
    pub fn new(
        spec: &ModelSpec,
        initial: &[f32],
        train: &Dataset,
        mode: Mode,
        optimizer: OptimizerConfig,
        noise: GaussianNoise,
        sampler_seed: Option<u64>,
    ) -> Result<Self, TrainError> {
        spec.validate()?;
        if matches!(mode, Mode::Private(_)) {
            check_supported(spec)?;
        }
        mode.validate()?;
        optimizer.validate().map_err(TrainError::InvalidParams)?;
        if train.is_empty() {
            return Err(TrainError::NoData);
        }
        if train.num_features() != spec.input_dim() {
            return Err(TrainError::FeatureMismatch {
                expected: spec.input_dim(),
                found: train.num_features(),
            });
        }
        let num_classes = spec.num_classes();
        if train
            .labels
            .iter()
            .any(|&l| l < 0 || l as usize >= num_classes)
        {
            return Err(TrainError::LabelOutOfRange { num_classes });
        }
        let net = Network::new(spec, initial)?;
        let sampler = match sampler_seed {
            Some(seed) => ChaCha20Rng::seed_from_u64(seed),
            None => ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
                .map_err(|e| DpError::Entropy(e.to_string()))?,
        };
        Ok(LocalTrainer {
            optimizer: Optimizer::new(optimizer, net.params().len()),
            net,
            mode,
            x: features_tensor(&train.features, train.num_features()),
            y: labels_tensor(&train.labels),
            n: train.len(),
            noise,
            sampler,
            steps: 0,
        })
    }

    /// Steps per epoch as Opacus counts them: `round(1/q)`.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.mode.sampling_rate()).round().max(1.0) as u64
    }

    /// One step on a fresh Poisson sample.
    pub fn step(&mut self) -> StepStats {
        let q = self.mode.sampling_rate();
        let indices: Vec<i64> = poisson_sample(&mut self.sampler, self.n, q)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        let index = Tensor::from_slice(&indices);
        let xb = self.x.index_select(0, &index);
        let yb = self.y.index_select(0, &index);
        let (grads, stats) = match self.mode {
            // Divided by the public B of the parameters, never by q·N: N is private.
            Mode::Private(params) => noisy_gradient(&self.net, &xb, &yb, &params, &mut self.noise),
            Mode::NonPrivate { .. } => {
                let (g, loss) = plain_gradient(&self.net, &xb, &yb);
                (
                    g,
                    StepStats {
                        batch_size: indices.len(),
                        mean_loss: loss,
                        clipped_fraction: 0.0,
                    },
                )
            }
        };
        self.optimizer.step(self.net.params_mut(), &grads);
        self.steps += 1;
        stats
    }

    pub fn steps_done(&self) -> u64 {
        self.steps
    }

    /// The privacy spent so far: one subsampled-Gaussian event once a noisy step was taken; no
    /// guarantee at all for a non-private run or one without noise.
    pub fn privacy_spent(&self) -> PrivacySpent {
        match self.mode {
            Mode::Private(p) if p.noise_multiplier > 0.0 => {
                PrivacySpent::Events(if self.steps == 0 {
                    Vec::new()
                } else {
                    vec![PrivacyEvent::SubsampledGaussian {
                        sampling_rate: p.sampling_rate,
                        noise_multiplier: p.noise_multiplier,
                        steps: self.steps,
                    }]
                })
            }
            _ => PrivacySpent::NoGuarantee,
        }
    }

    /// `(accuracy, mean loss)` on `data` (which must have the model's features).
    pub fn evaluate(&self, data: &Dataset) -> (f64, f64) {
        self.net.evaluate(
            &features_tensor(&data.features, data.num_features()),
            &labels_tensor(&data.labels),
        )
    }

    /// The current parameters as a flat vector in the spec's layout order.
    pub fn parameters(&self) -> Vec<f32> {
        self.net.to_flat()
    }
}

/// What a participant trains in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainingPlan {
    pub sampling_rate: f64,
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    /// The study's public divisor of every step's noisy clipped sum (never the site's own q·N).
    pub expected_batch_size: f64,
    pub steps: u64,
    pub optimizer: OptimizerConfig,
}

/// The result of one round of local training.
#[derive(Debug, Clone)]
pub struct LocalUpdate {
    /// Updated parameters (flat, layout order).
    pub parameters: Vec<f32>,
    /// The privacy spent on the local records, for the local ledger.
    pub events: Vec<PrivacyEvent>,
    pub steps: u64,
    /// Mean training loss over the round's steps (computed on private data: do not publish).
    pub mean_loss: f64,
}

/// The participant agent's entry point: DP-SGD from `global` for `plan.steps` steps on `train`
/// with OS-seeded noise and sampling, returning the new flat vector and the privacy events spent.
pub fn train_round(
    spec: &ModelSpec,
    global: &[f32],
    train: &Dataset,
    plan: &TrainingPlan,
) -> Result<LocalUpdate, TrainError> {
    if plan.steps == 0 {
        return Err(TrainError::InvalidParams(
            "a round needs at least one step".into(),
        ));
    }
    let mode = Mode::Private(DpSgdParams {
        sampling_rate: plan.sampling_rate,
        clip_norm: plan.clip_norm,
        noise_multiplier: plan.noise_multiplier,
        expected_batch_size: plan.expected_batch_size,
    });
    if plan.noise_multiplier.is_nan() || plan.noise_multiplier <= 0.0 || !plan.clip_norm.is_finite()
    {
        return Err(TrainError::InvalidParams(
            "a private round needs a noise multiplier > 0 and a finite clip norm".into(),
        ));
    }
    let noise = GaussianNoise::from_os_entropy()?;
    let mut trainer = LocalTrainer::new(spec, global, train, mode, plan.optimizer, noise, None)?;
    let mut loss = 0.0;
    for _ in 0..plan.steps {
        loss += trainer.step().mean_loss;
    }
    let PrivacySpent::Events(events) = trainer.privacy_spent() else {
        return Err(TrainError::InvalidParams(
            "a private round must spend a DP guarantee".into(),
        ));
    };
    Ok(LocalUpdate {
        parameters: trainer.parameters(),
        events,
        steps: trainer.steps_done(),
        mean_loss: loss / plan.steps as f64,
    })
}
