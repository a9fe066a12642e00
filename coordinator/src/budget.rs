//! Privacy budgets on the coordinator's side: the events a round charges, and ε of a participant's whole ledger by
//! the PLD accountant (pessimistic: it may overestimate ε, never underestimate it).
//!
//! PLD composition is CPU-heavy (an FFT per distinct mechanism, hundreds of milliseconds): [`epsilons`] runs it on
//! tokio's blocking pool so that it never stalls the async runtime, and computes each distinct ledger once
//! (participants who took part in the same rounds share one computation).

use std::collections::HashMap;

use confide_common::api::DpParams;
use confide_common::dp::{AccountantKind, PrivacyEvent, PrivacyLedger};

use crate::store::LedgerRow;
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

/// The events of a ledger given as one JSON array of events per charged round, with the runs of one mechanism
/// merged: `steps` of the same subsampled Gaussian (q, σ) compose to one event with the summed steps — the same
/// composition, which the accountant then discretises once instead of once per round.
fn events_of(ledger: &[serde_json::Value]) -> Result<Vec<PrivacyEvent>, String> {
    let mut events: Vec<PrivacyEvent> = Vec::new();
    for entry in ledger {
        let round: Vec<PrivacyEvent> = serde_json::from_value(entry.clone())
            .map_err(|e| format!("unreadable ledger entry {entry}: {e}"))?;
        for event in round {
            let same = events.iter_mut().find_map(|known| match (known, &event) {
                (
                    PrivacyEvent::SubsampledGaussian {
                        sampling_rate: q0,
                        noise_multiplier: s0,
                        steps,
                    },
                    PrivacyEvent::SubsampledGaussian {
                        sampling_rate: q1,
                        noise_multiplier: s1,
                        steps: more,
                    },
                ) if q0.to_bits() == q1.to_bits() && s0.to_bits() == s1.to_bits() => {
                    Some((steps, *more))
                }
                _ => None,
            });
            match same {
                Some((steps, more)) => {
                    *steps = steps
                        .checked_add(more)
                        .ok_or("ledger has more steps than fit in 64 bits")?
                }
                None => events.push(event),
            }
        }
    }
    Ok(events)
}

/// ε at `delta` of a ledger given as one JSON array of events per charged round (blocking: see [`epsilons`]).
pub fn epsilon(ledger: &[serde_json::Value], delta: f64) -> Result<f64, String> {
    let events = events_of(ledger)?;
    if events.is_empty() {
        return Ok(0.0);
    }
    PrivacyLedger { events }
        .epsilon(delta, AccountantKind::Pld)
        .map_err(|e| e.to_string())
}

/// Each participant's ledger — one JSON array of events per charged round, in charge order — from a study's ledger
/// rows.
pub fn ledgers_by_participant(
    rows: &[LedgerRow],
) -> Result<HashMap<i64, Vec<serde_json::Value>>, String> {
    let mut out: HashMap<i64, Vec<serde_json::Value>> = HashMap::new();
    for row in rows {
        let events = serde_json::from_str(&row.events_json).map_err(|e| {
            format!(
                "the stored ledger entry of participant {} for round {} is unreadable: {e}",
                row.participant_id, row.round_id
            )
        })?;
        out.entry(row.participant_id).or_default().push(events);
    }
    Ok(out)
}

/// ε at `delta` of each ledger, in order, computed on the blocking pool; identical ledgers are computed once.
pub async fn epsilons(
    ledgers: Vec<Vec<serde_json::Value>>,
    delta: f64,
) -> Result<Vec<f64>, String> {
    tokio::task::spawn_blocking(move || {
        let mut known: HashMap<String, f64> = HashMap::new();
        ledgers
            .iter()
            .map(|ledger| {
                let key = serde_json::to_string(ledger).map_err(|e| e.to_string())?;
                if let Some(eps) = known.get(&key) {
                    return Ok(*eps);
                }
                let eps = epsilon(ledger, delta)?;
                known.insert(key, eps);
                Ok(eps)
            })
            .collect()
    })
    .await
    .map_err(|e| format!("the ε computation failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(q: f64, sigma: f64, steps: u64) -> serde_json::Value {
        serde_json::to_value(vec![PrivacyEvent::SubsampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
            steps,
        }])
        .unwrap()
    }

    #[test]
    fn merging_runs_of_one_mechanism_keeps_epsilon() {
        let ledger = vec![
            round(0.1, 1.1, 10),
            round(0.1, 1.1, 10),
            round(0.1, 1.1, 10),
        ];
        let merged = epsilon(&ledger, 1e-5).unwrap();
        let separate = PrivacyLedger {
            events: ledger
                .iter()
                .flat_map(|e| serde_json::from_value::<Vec<PrivacyEvent>>(e.clone()).unwrap())
                .collect(),
        }
        .epsilon(1e-5, AccountantKind::Pld)
        .unwrap();
        assert!(
            (merged - separate).abs() <= 1e-9 * separate,
            "merged {merged} vs separate {separate}"
        );
        assert_eq!(events_of(&ledger).unwrap().len(), 1);
        let mixed = vec![round(0.1, 1.1, 10), round(0.2, 1.1, 10)];
        assert_eq!(
            events_of(&mixed).unwrap().len(),
            2,
            "different mechanisms stay apart"
        );
    }

    #[tokio::test]
    async fn epsilons_are_in_order_and_zero_for_an_empty_ledger() {
        let one = vec![round(0.1, 1.1, 10)];
        let two = vec![round(0.1, 1.1, 10), round(0.1, 1.1, 10)];
        let eps = epsilons(vec![two.clone(), vec![], one.clone(), two.clone()], 1e-5)
            .await
            .unwrap();
        assert_eq!(eps[1], 0.0);
        assert!(eps[2] > 0.0 && eps[0] > eps[2], "{eps:?}");
        assert_eq!(eps[0], eps[3]);
        assert_eq!(eps[2], epsilon(&one, 1e-5).unwrap());
    }
}
