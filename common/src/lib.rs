//! Confide's pure core. Nothing in this crate touches sockets, clocks, files or databases:
//! the coordinator and the participant agent drive these state machines and calculators.
//!
//! - [`secagg`]: Bonawitz-style secure aggregation (client and server state machines, crypto, quantisation).
//! - [`dp`]: privacy accounting (RDP, PLD, analytic Gaussian), calibration and the privacy ledger.
//! - [`api`]: HTTP wire types of the coordinator API (serde only).
//! - [`model`]: model specifications and the flat parameter-vector layout both sides agree on.
//! - [`plan`]: what a study's round asks of every participant (steps, charged events, update range).
//! - [`preprocessing`]: feature scaling from public ranges (no central data), checked declarations.
//! - [`evaluation`]: federated evaluation: the per-record hold-out, the DP release of correct / count / loss, metrics.
//! - [`statistics`]: the DP statistics release's sensitivity, noise and accounting, and mean/std from its totals.

pub mod api;
pub mod dp;
pub mod evaluation;
pub mod model;
pub mod plan;
pub mod preprocessing;
pub mod secagg;
pub mod statistics;
