//! The site's hold-out: which records it evaluates on and never trains on, when the study declares federated
//! evaluation.
//!
//! A record's part follows from a keyed hash of that record's own values and the study's public seed
//! ([`confide_common::evaluation::holdout_part`]), computed on the records as loaded (before any per-round
//! scaling, which may change when a statistics round publishes): adding or removing a record moves no other
//! record, so training and evaluation releases compose in parallel in the dataset's ledger.
//!
//! That holds only while every study charging the dataset splits it the same way. The first split used is pinned
//! beside the dataset's ledger (`holdout-<sha256 of the dataset id>.json`: seed and fraction); a round that asks
//! for another split is declined, saying so. Fail closed: a different split would make "training" and
//! "evaluation" in the ledger name different records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use confide_common::dp::DataPartition;
use confide_common::evaluation::{EvaluationConfig, holdout_part};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Dataset;

/// The split a dataset's ledger charges are recorded against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub seed: u64,
    pub holdout_fraction: f64,
}

impl From<&EvaluationConfig> for Split {
    fn from(c: &EvaluationConfig) -> Self {
        Self {
            seed: c.seed,
            holdout_fraction: c.holdout_fraction,
        }
    }
}

/// `(training, evaluation)`: the records of each part, in file order.
pub fn split(data: &Dataset, split: Split) -> (Dataset, Dataset) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for i in 0..data.len() {
        match holdout_part(
            split.seed,
            data.row(i),
            data.labels[i],
            split.holdout_fraction,
        ) {
            DataPartition::Evaluation => eval.push(i),
            _ => train.push(i),
        }
    }
    (data.select(&train), data.select(&eval))
}

/// The records a round may use for `part` and the partition its charge records: with a study `evaluation`, the
/// training part (training rounds) or the held-out part (evaluation rounds), the split checked against the
/// dataset's pin at `pin`; without one, every record (charged to `All`). `Err` is the reason to decline.
pub fn round_part(
    data: &Arc<Dataset>,
    evaluation: Option<&EvaluationConfig>,
    part: DataPartition,
    pin: &Path,
) -> Result<(Arc<Dataset>, DataPartition), String> {
    let Some(config) = evaluation else {
        return match part {
            DataPartition::Evaluation => {
                Err("an evaluation round of a study that declares no evaluation".into())
            }
            _ => Ok((Arc::clone(data), DataPartition::All)),
        };
    };
    config
        .validate(u32::MAX)
        .map_err(|e| format!("the study's evaluation: {e}"))?;
    let wanted = Split::from(config);
    check_pinned(pin, wanted)?;
    let (training, evaluation) = split(data, wanted);
    Ok(match part {
        DataPartition::Evaluation => (Arc::new(evaluation), DataPartition::Evaluation),
        _ => (Arc::new(training), DataPartition::Training),
    })
}

/// Where a dataset's pinned split is kept: beside its ledger.
pub fn pin_path(ledger: &Path, dataset_id: &str) -> PathBuf {
    let name = format!(
        "holdout-{}.json",
        hex::encode(Sha256::digest(dataset_id.as_bytes()))
    );
    match ledger.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// Pins `wanted` as the dataset's split on first use; afterwards, `Err` with the reason to decline if a round
/// asks for another split (or the pin cannot be read or written).
pub fn check_pinned(path: &Path, wanted: Split) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let pinned: Split = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the dataset's hold-out pin {} is unreadable: {e}",
                    path.display()
                )
            })?;
            if pinned != wanted {
                return Err(format!(
                    "the study holds out records with seed {} and fraction {}, but this dataset's ledger records \
                     charges against the split with seed {} and fraction {} (pinned in {}): another split would \
                     make its training and evaluation parts other records, and their parallel composition \
                     invalid. Use the pinned seed and fraction in the study, or serve the data under a new \
                     dataset id",
                    wanted.seed,
                    wanted.holdout_fraction,
                    pinned.seed,
                    pinned.holdout_fraction,
                    path.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let json = serde_json::to_vec(&wanted).map_err(|e| e.to_string())?;
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("pinning the hold-out in {}: {e}", path.display()))
        }
        Err(e) => Err(format!("reading the hold-out pin {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        Dataset {
            feature_names: vec!["a".into(), "b".into()],
            features: (0..n)
                .flat_map(|i| [i as f32, (i * 7 % 11) as f32])
                .collect(),
            labels: (0..n).map(|i| (i % 2) as i64).collect(),
        }
    }

    fn rows(d: &Dataset) -> Vec<(Vec<f32>, i64)> {
        (0..d.len())
            .map(|i| (d.row(i).to_vec(), d.labels[i]))
            .collect()
    }

    #[test]
    fn the_split_is_deterministic_disjoint_complete_and_per_record() {
        let s = Split {
            seed: 3,
            holdout_fraction: 0.25,
        };
        let all = data(400);
        let (train, eval) = split(&all, s);
        assert_eq!(train.len() + eval.len(), 400);
        assert!(
            (eval.len() as f64 / 400.0 - 0.25).abs() < 0.07,
            "{}",
            eval.len()
        );
        let (t, e) = (rows(&train), rows(&eval));
        assert!(t.iter().all(|r| !e.contains(r)), "disjoint");
        assert_eq!(
            split(&all, s),
            (train.clone(), eval.clone()),
            "deterministic"
        );
        // Removing a record (here the first) moves no other record between the parts.
        let fewer = all.select(&(1..400).collect::<Vec<_>>());
        let (t2, e2) = split(&fewer, s);
        let first = (all.row(0).to_vec(), all.labels[0]);
        assert_eq!(
            rows(&t2),
            t.iter()
                .filter(|r| **r != first)
                .cloned()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            rows(&e2),
            e.iter()
                .filter(|r| **r != first)
                .cloned()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn training_rounds_never_see_a_held_out_record() {
        use confide_common::evaluation::EvaluationSchedule;
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("holdout.json");
        let all = Arc::new(data(300));
        let config = EvaluationConfig {
            holdout_fraction: 0.3,
            epsilon: 1.0,
            schedule: EvaluationSchedule::EveryRound,
            min_records: 5,
            loss_max: 2.0,
            max_records_per_site: 1000,
            seed: 9,
        };
        let (train, p) = round_part(&all, Some(&config), DataPartition::Training, &pin).unwrap();
        assert_eq!(p, DataPartition::Training);
        let (eval, p) = round_part(&all, Some(&config), DataPartition::Evaluation, &pin).unwrap();
        assert_eq!(p, DataPartition::Evaluation);
        let held = rows(&eval);
        assert!(!held.is_empty() && rows(&train).iter().all(|r| !held.contains(r)));
        assert_eq!(train.len() + eval.len(), 300);
        // Every held-out record hashes to the evaluation part, every training record to the training part.
        for (row, label) in &held {
            assert_eq!(holdout_part(9, row, *label, 0.3), DataPartition::Evaluation);
        }
        // Without evaluation: every record, charged to All; an evaluation round is refused.
        let (every, p) = round_part(&all, None, DataPartition::Training, &pin).unwrap();
        assert_eq!((every.len(), p), (300, DataPartition::All));
        assert!(round_part(&all, None, DataPartition::Evaluation, &pin).is_err());
        // Another split of the same dataset is refused (the pin holds seed 9).
        let other = EvaluationConfig { seed: 10, ..config };
        let e = round_part(&all, Some(&other), DataPartition::Training, &pin).unwrap_err();
        assert!(e.contains("pinned"), "{e}");
    }

    #[test]
    fn the_first_split_is_pinned_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = pin_path(&dir.path().join("ledger.sqlite"), "hospital-a");
        assert_eq!(path.parent(), Some(dir.path()));
        let s = Split {
            seed: 1,
            holdout_fraction: 0.2,
        };
        check_pinned(&path, s).unwrap();
        check_pinned(&path, s).unwrap();
        let e = check_pinned(
            &path,
            Split {
                seed: 2,
                holdout_fraction: 0.2,
            },
        )
        .unwrap_err();
        assert!(e.contains("seed 2") && e.contains("seed 1"), "{e}");
        assert!(
            check_pinned(
                &path,
                Split {
                    seed: 1,
                    holdout_fraction: 0.3
                }
            )
            .is_err()
        );
    }
}
