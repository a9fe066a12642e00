//! Differential privacy: the one noise sampler, the accountants (RDP, PLD, analytic Gaussian),
//! noise calibration and the privacy ledger. Everything here is pure computation.
//!
//! Conventions: every mechanism has sensitivity 1 (DP-SGD clips to C and adds N(0, σ²C²), so the noise multiplier
//! σ is what matters); neighbouring datasets differ by adding or removing one record; ε never underestimates.

pub mod analytic_gaussian;
pub mod calibrate;
mod error;
mod keystream;
pub mod ledger;
pub mod noise;
pub mod partition;
pub mod pld;
pub mod rdp;
pub(crate) mod special;

pub use calibrate::{noise_multiplier_for_rounds, noise_multiplier_for_target};
pub use error::DpError;
pub use ledger::{AccountantKind, PrivacyEvent, PrivacyLedger};
pub use noise::GaussianNoise;
pub use partition::{DataPartition, PartitionedEvent, partitioned_epsilon};
pub use pld::{DeltaBounds, EpsilonBounds, PldAccountant};
pub use rdp::RdpAccountant;
