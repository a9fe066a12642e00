//! Privacy budgets on the coordinator's side: each participant's ledger and its ε, by the one accountant path
//! (`PrivacyLedger::epsilon`, PLD, the certified upper bound: it may overestimate ε, never underestimate it).
//!
//! PLD composition is CPU-heavy (an FFT per distinct mechanism, hundreds of milliseconds): [`epsilons`] runs it on
//! tokio's blocking pool so that it never stalls the async runtime, and computes each distinct ledger once
//! (participants who took part in the same rounds share one computation).

use std::collections::HashMap;

use confide_common::dp::{AccountantKind, DpError, PrivacyEvent, PrivacyLedger};

use crate::store::LedgerRow;

/// Each participant's ledger (its charged events in charge order) from a study's ledger rows.
pub fn ledgers_by_participant(rows: Vec<LedgerRow>) -> HashMap<i64, PrivacyLedger> {
    let mut out: HashMap<i64, PrivacyLedger> = HashMap::new();
    for row in rows {
        out.entry(row.participant_id)
            .or_default()
            .events
            .extend(row.events);
    }
    out
}

/// ε at `delta` of each ledger, in order, computed on the blocking pool; identical ledgers are computed once.
pub async fn epsilons(ledgers: Vec<PrivacyLedger>, delta: f64) -> Result<Vec<f64>, String> {
    tokio::task::spawn_blocking(move || {
        let mut known: Vec<(&[PrivacyEvent], f64)> = Vec::new();
        ledgers
            .iter()
            .map(|ledger| {
                if let Some((_, eps)) = known.iter().find(|(events, _)| *events == ledger.events) {
                    return Ok(*eps);
                }
                let eps = ledger
                    .epsilon(delta, AccountantKind::Pld)
                    .map_err(|e: DpError| e.to_string())?;
                known.push((&ledger.events, eps));
                Ok(eps)
            })
            .collect()
    })
    .await
    .map_err(|e| format!("the ε computation failed: {e}"))?
}

/// ε at `delta` of one ledger plus `planned`, on the blocking pool (e.g. the first round of a study to be).
pub async fn epsilon_with(
    ledger: PrivacyLedger,
    planned: Vec<PrivacyEvent>,
    delta: f64,
) -> Result<f64, String> {
    tokio::task::spawn_blocking(move || {
        ledger
            .epsilon_with(&planned, delta, AccountantKind::Pld)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the ε computation failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(q: f64, sigma: f64, steps: u64) -> PrivacyEvent {
        PrivacyEvent::SubsampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
            steps,
        }
    }

    fn ledger(events: &[PrivacyEvent]) -> PrivacyLedger {
        PrivacyLedger {
            events: events.to_vec(),
        }
    }

    #[tokio::test]
    async fn epsilons_are_in_order_and_zero_for_an_empty_ledger() {
        let one = ledger(&[round(0.1, 1.1, 10)]);
        let two = ledger(&[round(0.1, 1.1, 10), round(0.1, 1.1, 10)]);
        let eps = epsilons(
            vec![two.clone(), PrivacyLedger::new(), one.clone(), two.clone()],
            1e-5,
        )
        .await
        .unwrap();
        assert_eq!(eps[1], 0.0);
        assert!(eps[2] > 0.0 && eps[0] > eps[2], "{eps:?}");
        assert_eq!(eps[0], eps[3]);
        assert_eq!(eps[2], one.epsilon(1e-5, AccountantKind::Pld).unwrap());
    }

    #[test]
    fn rows_group_by_participant_in_charge_order() {
        let rows = vec![
            LedgerRow {
                study_id: 1,
                participant_id: 5,
                round_id: 1,
                events: vec![round(0.1, 1.0, 3)],
                epsilon_after: 0.0,
            },
            LedgerRow {
                study_id: 1,
                participant_id: 6,
                round_id: 1,
                events: vec![round(0.1, 1.0, 4)],
                epsilon_after: 0.0,
            },
            LedgerRow {
                study_id: 1,
                participant_id: 5,
                round_id: 2,
                events: vec![round(0.2, 1.0, 3)],
                epsilon_after: 0.0,
            },
        ];
        let by = ledgers_by_participant(rows);
        assert_eq!(by[&5].events, vec![round(0.1, 1.0, 3), round(0.2, 1.0, 3)]);
        assert_eq!(by[&6].events, vec![round(0.1, 1.0, 4)]);
    }
}
