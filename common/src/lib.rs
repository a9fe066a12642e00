//! Confide's pure core. Nothing in this crate touches sockets, clocks, files or databases:
//! the coordinator and the participant agent drive these state machines and calculators.
//!
//! - [`secagg`]: Bonawitz-style secure aggregation (client and server state machines, crypto, quantisation).
//! - [`dp`]: privacy accounting (RDP, PLD, analytic Gaussian), calibration and the privacy ledger.
//! - [`model`]: model specifications and the flat parameter-vector layout both sides agree on.

pub mod dp;
pub mod model;
pub mod secagg;
