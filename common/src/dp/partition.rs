//! Parallel composition over disjoint parts of one dataset.
//!
//! A site that holds out part of its records for evaluation trains on the rest: a training release says nothing
//! about an evaluation record and an evaluation release nothing about a training record. Under add/remove
//! neighbouring, the record that differs lies in exactly one part, so only the releases that touched that part
//! (and those that touched every record, like a statistics round) depend on it. A record's ε is therefore the
//! larger of the two parts' ε, not their sum:
//!
//! ε(dataset) = max( ε(All ∪ Training), ε(All ∪ Evaluation) ).
//!
//! This holds only if a record's part is decided by the record alone (a keyed hash of its values, never a shuffle
//! of the whole file): adding or removing one record must not move any other record between parts. The agent's
//! hold-out does exactly that.

use serde::{Deserialize, Serialize};

use super::DpError;
use super::ledger::{AccountantKind, PrivacyEvent, epsilon};

/// Which of a dataset's records a release used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DataPartition {
    /// Every record (e.g. a statistics round, or training before any hold-out existed).
    All,
    /// The records a site trains on.
    Training,
    /// The records a site holds out for evaluation (never trained on).
    Evaluation,
}

impl DataPartition {
    pub const ALL: [Self; 3] = [Self::All, Self::Training, Self::Evaluation];

    /// The name in ledgers and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Training => "training",
            Self::Evaluation => "evaluation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// One release and the part of the dataset it used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartitionedEvent {
    pub partition: DataPartition,
    pub event: PrivacyEvent,
}

/// ε at `delta` of a dataset whose releases are `events`, each tagged with the part it used: the larger of the
/// two parts' ε (parallel composition), each part composing its own releases with those of every record.
///
/// When only one of the two parts has releases of its own, the other part's releases are a subset of its
/// releases, and ε of a subset never exceeds ε of the whole (the accountants' bounds are certified upper bounds
/// of the superset), so one accountant call suffices.
pub fn partitioned_epsilon(
    events: &[PartitionedEvent],
    delta: f64,
    kind: AccountantKind,
) -> Result<f64, DpError> {
    let of = |part: DataPartition| -> Vec<PrivacyEvent> {
        events
            .iter()
            .filter(|e| e.partition == DataPartition::All || e.partition == part)
            .map(|e| e.event)
            .collect()
    };
    let has = |part: DataPartition| events.iter().any(|e| e.partition == part);
    match (has(DataPartition::Training), has(DataPartition::Evaluation)) {
        (true, true) => {
            let training = epsilon(&of(DataPartition::Training), delta, kind)?;
            let evaluation = epsilon(&of(DataPartition::Evaluation), delta, kind)?;
            Ok(training.max(evaluation))
        }
        (_, true) => epsilon(&of(DataPartition::Evaluation), delta, kind),
        _ => epsilon(&of(DataPartition::Training), delta, kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(steps: u64) -> PrivacyEvent {
        PrivacyEvent::SubsampledGaussian {
            sampling_rate: 0.2,
            noise_multiplier: 3.0,
            steps,
        }
    }

    fn tagged(partition: DataPartition, event: PrivacyEvent) -> PartitionedEvent {
        PartitionedEvent { partition, event }
    }

    const DELTA: f64 = 1e-5;

    fn eps(events: &[PrivacyEvent]) -> f64 {
        epsilon(events, DELTA, AccountantKind::Pld).unwrap()
    }

    #[test]
    fn disjoint_parts_compose_in_parallel_not_in_sequence() {
        let train = sgd(50);
        let eval = PrivacyEvent::ZcdpGaussian { rho: 0.02 };
        let ledger = [
            tagged(DataPartition::Training, train),
            tagged(DataPartition::Evaluation, eval),
            tagged(DataPartition::Training, train),
        ];
        let got = partitioned_epsilon(&ledger, DELTA, AccountantKind::Pld).unwrap();
        let training_only = eps(&[train, train]);
        let evaluation_only = eps(&[eval]);
        let sequential = eps(&[train, train, eval]);
        assert_eq!(got, training_only.max(evaluation_only));
        assert!(
            got < sequential,
            "parallel {got} must be below sequential {sequential}"
        );
        // The larger part decides: here training.
        assert!(training_only > evaluation_only);
    }

    #[test]
    fn releases_of_every_record_count_in_both_parts() {
        let stats = PrivacyEvent::ZcdpGaussian { rho: 0.05 };
        let train = sgd(20);
        let eval = PrivacyEvent::ZcdpGaussian { rho: 0.5 };
        let ledger = [
            tagged(DataPartition::All, stats),
            tagged(DataPartition::Training, train),
            tagged(DataPartition::Evaluation, eval),
        ];
        let got = partitioned_epsilon(&ledger, DELTA, AccountantKind::Pld).unwrap();
        let expected = eps(&[stats, train]).max(eps(&[stats, eval]));
        assert_eq!(got, expected);
        assert!(got >= eps(&[stats, eval]) && got >= eps(&[stats, train]));
    }

    #[test]
    fn a_ledger_of_one_part_is_its_sequential_composition() {
        let all = [sgd(10), sgd(10)];
        let ledger: Vec<_> = all.iter().map(|e| tagged(DataPartition::All, *e)).collect();
        assert_eq!(
            partitioned_epsilon(&ledger, DELTA, AccountantKind::Pld).unwrap(),
            eps(&all)
        );
        let ledger: Vec<_> = all
            .iter()
            .map(|e| tagged(DataPartition::Evaluation, *e))
            .collect();
        assert_eq!(
            partitioned_epsilon(&ledger, DELTA, AccountantKind::Pld).unwrap(),
            eps(&all)
        );
        assert_eq!(
            partitioned_epsilon(&[], DELTA, AccountantKind::Pld).unwrap(),
            0.0
        );
        // Invalid events are refused, whatever their part.
        let bad = [tagged(
            DataPartition::Evaluation,
            PrivacyEvent::ZcdpGaussian { rho: -1.0 },
        )];
        assert!(partitioned_epsilon(&bad, DELTA, AccountantKind::Pld).is_err());
        for p in DataPartition::ALL {
            assert_eq!(DataPartition::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
