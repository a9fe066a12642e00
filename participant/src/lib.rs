//! Confide participant: data loading, the DP-SGD training engine on tch, and the agent that takes part in rounds
//! against the coordinator.
//!
//! - [`agent`]: enrolment, the task loop, the local privacy ledger, configuration.
//! - [`data`]: CSV reading with file/line/column errors, standardisation, train/test split.
//! - [`model`]: the tch network built from a `ModelSpec`, loaded from / stored to the flat vector.
//! - [`dpsgd`]: Poisson sampling, ghost-norm clipping, noise, SGD/Adam.
//! - [`train`]: the local training loop; [`train::train_round`] is what the agent calls per round.
//! - [`bench`]: plain vs DP step speed.
//! - [`omp`]: running Rust work (the noise draw) on torch's OpenMP threads.
//! - [`tensor_fill`]: writing a tensor's values from Rust in place (the noise vector).

pub mod agent;
pub mod bench;
pub mod data;
pub mod dpsgd;
pub mod model;
pub mod omp;
pub mod release;
pub mod tensor_fill;
pub mod train;

/// The privacy module (noise, events, accountants), re-exported for convenience.
pub use confide_common::dp;
