//! Differential privacy: the one noise sampler, the accountants (RDP, PLD, analytic Gaussian),
//! noise calibration and the privacy ledger. Everything here is pure computation.

mod error;
pub mod noise;

pub use error::DpError;
pub use noise::GaussianNoise;
