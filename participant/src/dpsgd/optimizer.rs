//! SGD with momentum and Adam, applied to the network's parameter tensors with torch's update
//! rules (`torch.optim.SGD` with dampening 0, `torch.optim.Adam`). DP-SGD feeds them the noisy
//! clipped gradient; plain training feeds them the ordinary gradient.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which optimiser and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd {
        learning_rate: f64,
        momentum: f64,
    },
    Adam {
        learning_rate: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl OptimizerConfig {
    /// Adam with torch's default betas and epsilon.
    pub fn adam(learning_rate: f64) -> Self {
        OptimizerConfig::Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Rejects non-finite or out-of-range hyper-parameters.
    pub fn validate(&self) -> Result<(), String> {
        let ok = match *self {
            OptimizerConfig::Sgd {
                learning_rate,
                momentum,
            } => learning_rate.is_finite() && learning_rate > 0.0 && (0.0..1.0).contains(&momentum),
            OptimizerConfig::Adam {
                learning_rate,
                beta1,
                beta2,
                eps,
            } => {
                learning_rate.is_finite()
                    && learning_rate > 0.0
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
                    && eps.is_finite()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid optimizer settings {self:?}: learning rate must be > 0, momentum and betas in [0, 1), eps > 0"
            ))
        }
    }
}

/// Optimiser state for a list of parameter tensors.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// SGD: momentum buffers; Adam: first moments.
    first: Vec<Option<Tensor>>,
    /// Adam: second moments.
    second: Vec<Option<Tensor>>,
    steps: i32,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, num_params: usize) -> Self {
        Optimizer {
            config,
            first: (0..num_params).map(|_| None).collect(),
            second: (0..num_params).map(|_| None).collect(),
            steps: 0,
        }
    }

    /// Updates `params` in place with `grads` (same order and shapes).
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            match self.config {
                OptimizerConfig::Sgd {
                    learning_rate,
                    momentum,
                } => {
                    let direction = if momentum > 0.0 {
                        let buf = match self.first[i].take() {
                            Some(mut b) => {
                                let _ = b.g_mul_scalar_(momentum).g_add_(g);
                                b
                            }
                            None => g.copy(),
                        };
                        let d = buf.shallow_clone();
                        self.first[i] = Some(buf);
                        d
                    } else {
                        g.shallow_clone()
                    };
                    let _ = p.g_sub_(&(direction * learning_rate));
                }
                OptimizerConfig::Adam {
                    learning_rate,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let mut m = self.first[i].take().unwrap_or_else(|| g.zeros_like());
                    let mut v = self.second[i].take().unwrap_or_else(|| g.zeros_like());
                    let _ = m.g_mul_scalar_(beta1).g_add_(&(g * (1.0 - beta1)));
                    let _ = v.g_mul_scalar_(beta2).g_add_(&(g.square() * (1.0 - beta2)));
                    let bc1 = 1.0 - beta1.powi(self.steps);
                    let bc2 = 1.0 - beta2.powi(self.steps);
                    let denom = (&v / bc2).sqrt() + eps;
                    let _ = p.g_sub_(&(&m / denom * (learning_rate / bc1)));
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                }
            }
        }
    }
}
