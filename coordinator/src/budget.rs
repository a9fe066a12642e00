//! Privacy budgets on the coordinator's side: the events a round charges, and ε of a participant's whole ledger by
//! the PLD accountant (pessimistic: it may overestimate ε, never underestimate it).

use confide_common::api::DpParams;
use confide_common::dp::{AccountantKind, PrivacyEvent, PrivacyLedger};

use crate::study::planned_steps;

/// The events one round charges a participant whose input is aggregated: its local DP-SGD run.
pub fn planned_events(dp: &DpParams) -> serde_json::Value {
    let events = vec![PrivacyEvent::SubsampledGaussian {
        sampling_rate: dp.sampling_rate,
        noise_multiplier: dp.noise_multiplier,
        steps: planned_steps(dp),
    }];
    serde_json::to_value(events).unwrap_or(serde_json::Value::Null)
}

/// ε at `delta` of a ledger given as one JSON array of events per charged round.
pub fn epsilon(ledger: &[serde_json::Value], delta: f64) -> Result<f64, String> {
    let mut events = Vec::new();
    for entry in ledger {
        let round: Vec<PrivacyEvent> = serde_json::from_value(entry.clone())
            .map_err(|e| format!("unreadable ledger entry {entry}: {e}"))?;
        events.extend(round);
    }
    if events.is_empty() {
        return Ok(0.0);
    }
    PrivacyLedger { events }
        .epsilon(delta, AccountantKind::Pld)
        .map_err(|e| e.to_string())
}
