//! Test hooks of debug builds only. In release builds both functions compile to nothing, so no environment variable
//! can make a production agent crash on purpose or write what it sends to disk.
//!
//! - `CONFIDE_AGENT_CRASH_AT=after_share_keys|before_unmasking_response`: abort the process at that point
//!   (deterministic dropouts for the federation tests).
//! - `CONFIDE_AGENT_DUMP_INPUTS=1`: write the quantised input (ring elements, weight coordinate last) of each round
//!   to `<state dir>/debug-input-<round id>.json` just before it is masked and sent, so a test can compute the
//!   exact aggregate the coordinator must publish.

use std::path::Path;

/// Crash points a test may ask for.
pub const AFTER_SHARE_KEYS: &str = "after_share_keys";
pub const BEFORE_UNMASKING_RESPONSE: &str = "before_unmasking_response";

/// Aborts the process (no clean-up, like a kill) if `CONFIDE_AGENT_CRASH_AT` names `point`. Debug builds only.
#[cfg(debug_assertions)]
pub fn crash_point(point: &str) {
    if std::env::var("CONFIDE_AGENT_CRASH_AT").as_deref() == Ok(point) {
        eprintln!("CONFIDE_AGENT_CRASH_AT={point}: aborting (debug-build test hook)");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

/// Writes the round's quantised input to the state directory if `CONFIDE_AGENT_DUMP_INPUTS=1`. Debug builds only.
#[cfg(debug_assertions)]
pub fn dump_input(state_dir: &Path, round_id: i64, input: &[u32]) {
    if std::env::var("CONFIDE_AGENT_DUMP_INPUTS").as_deref() == Ok("1") {
        let body = serde_json::json!({ "round_id": round_id, "input": input });
        let name = format!("debug-input-{round_id}.json");
        if let Err(e) =
            super::state::write_private_file(state_dir, &name, body.to_string().as_bytes())
        {
            eprintln!("debug hook: could not write {name}: {e}");
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn dump_input(_state_dir: &Path, _round_id: i64, _input: &[u32]) {}
