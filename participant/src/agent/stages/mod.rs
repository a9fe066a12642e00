//! One file per round stage, each an `impl Agent` block with the stage's handler; [`super::Agent::handle`] picks the
//! handler for the task's stage.

mod advertise;
mod consistency_check;
mod evaluation;
mod masked_input;
mod share_keys;
mod share_verification;
mod statistics;
mod unmasking;
