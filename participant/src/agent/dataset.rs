//! The dataset the agent serves: its records (read once at start), the content fingerprint the privacy ledger knows
//! it by, and where their scaling comes from (by default the study's public feature ranges, applied per round).

use std::sync::Arc;

use confide_common::api::RoundTask;
use confide_common::preprocessing::{FeatureScaling, Preprocessing};

use crate::data::{CsvOptions, Dataset, Standardization, read_csv_with_fingerprint};

use super::AgentError;
use super::config::{AgentConfig, DataConfig};
use super::ledger::{LocalLedger, Registration};

/// Labels are checked against the model's classes when a round's model arrives; until then any integer is read.
const MAX_LABEL_CLASSES: usize = 1 << 20;

/// Where the scaling of the records comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// The study's public feature ranges, sent with every round task: nothing about the records. The default.
    Study,
    /// A file fixed in advance (`--stats`, e.g. from public reference data): nothing about the records. It
    /// overrides the study's ranges.
    Given,
    /// The records' own mean and std, allowed explicitly: NOT covered by the DP guarantee.
    OwnRecords,
}

/// The site's records with their fingerprint. With [`Statistics::Given`] or [`Statistics::OwnRecords`] they are
/// standardised once here; with [`Statistics::Study`] they stay raw and each round scales a copy by the study's
/// ranges ([`scale_for_study`]).
#[derive(Debug)]
pub struct LocalDataset {
    pub records: Dataset,
    /// sha256 (hex) of the data file's bytes.
    pub fingerprint: String,
    pub statistics: Statistics,
}

/// Warns that the update depends on statistics of the records that no DP guarantee covers (at start and every
/// round, so it cannot be missed in the logs).
pub fn warn_non_private_statistics() {
    tracing::warn!(
        "NON-PRIVATE STATISTICS: this agent standardises with the mean and std of its own records \
         (--allow-non-private-statistics). They are not covered by the differential-privacy guarantee and shape \
         every update it sends; use the study's feature ranges (omit --stats) or a statistics file fixed in \
         advance (--stats) instead"
    );
}

/// Reads and fingerprints the site's records (a bad file stops the agent before it enrols), and standardises them
/// with a statistics file if one is given, or with their own statistics if that was allowed explicitly. Otherwise
/// they are scaled each round by the study's public feature ranges.
pub fn load(cfg: &DataConfig) -> Result<LocalDataset, AgentError> {
    let (mut records, fingerprint) = read_csv_with_fingerprint(
        &cfg.path,
        &CsvOptions {
            label: cfg.label.clone(),
            features: cfg.features.clone(),
            num_classes: MAX_LABEL_CLASSES,
        },
    )?;
    let (stats, statistics) = match (&cfg.stats, cfg.allow_non_private_statistics) {
        (Some(path), _) => (Standardization::read(path)?, Statistics::Given),
        (None, true) => {
            warn_non_private_statistics();
            (Standardization::compute(&records), Statistics::OwnRecords)
        }
        (None, false) => {
            return Ok(LocalDataset {
                records,
                fingerprint,
                statistics: Statistics::Study,
            });
        }
    };
    stats.check(&records)?;
    stats.apply(&mut records);
    Ok(LocalDataset {
        records,
        fingerprint,
        statistics,
    })
}

/// The study's public range scaling, checked against this site's records (as many features, the same names in the
/// same order), or why it does not fit them.
pub fn range_scaling_for(p: &Preprocessing, raw: &Dataset) -> Result<FeatureScaling, String> {
    p.validate(raw.num_features())
        .map_err(|e| format!("the study's preprocessing: {e}"))?;
    let scaling = p.range_scaling();
    scaling
        .check_features(&raw.feature_names)
        .map_err(|e| e.to_string())?;
    Ok(scaling)
}

/// The records scaled by the study's public feature ranges (a copy; the raw records stay as read), or why the
/// round cannot be trained: the study declares no ranges, or ranges for other features.
pub fn scale_for_study(
    raw: &Dataset,
    preprocessing: Option<&Preprocessing>,
) -> Result<Dataset, String> {
    let Some(p) = preprocessing else {
        return Err(
            "the study declares no feature ranges (preprocessing.feature_ranges) and this agent has no \
             statistics file (--stats): it does not scale its records by their own statistics, which no DP \
             guarantee covers"
                .into(),
        );
    };
    let scaling = range_scaling_for(p, raw)?;
    let mut scaled = raw.clone();
    scaling.apply(&mut scaled.features);
    Ok(scaled)
}

/// The records a round trains on: as loaded with a statistics file (or the records' own statistics), else a copy
/// standardised by the study's published DP statistics or, before any, scaled by its public feature ranges; `Err`
/// is the reason to decline the round.
pub fn round_records(
    statistics: Statistics,
    records: &Arc<Dataset>,
    task: &RoundTask,
) -> Result<Arc<Dataset>, String> {
    match statistics {
        Statistics::Given | Statistics::OwnRecords => Ok(Arc::clone(records)),
        Statistics::Study => match &task.statistics {
            // The study's DP statistics, published with the base model: they replace the ranges.
            Some(published) => {
                published
                    .scaling
                    .check_features(&records.feature_names)
                    .map_err(|e| format!("the study's published statistics: {e}"))?;
                if published
                    .scaling
                    .scale
                    .iter()
                    .any(|s| !(s.is_finite() && *s > 0.0))
                    || published.scaling.center.iter().any(|c| !c.is_finite())
                    || published.scaling.scale.len() != records.num_features()
                    || published.scaling.center.len() != records.num_features()
                {
                    return Err("the study's published statistics are not finite or not > 0".into());
                }
                let mut scaled = records.as_ref().clone();
                published.scaling.apply(&mut scaled.features);
                Ok(Arc::new(scaled))
            }
            None => scale_for_study(records, task.preprocessing.as_ref()).map(Arc::new),
        },
    }
}

/// Opens the dataset's ledger (creating its folder if needed), registers the data's fingerprint and records the
/// budget enforced. Refuses content registered under another dataset id; warns loudly when the dataset's content
/// changed (its past spend stands).
pub async fn open_ledger(cfg: &AgentConfig, fingerprint: &str) -> Result<LocalLedger, AgentError> {
    let dataset = &cfg.data.dataset_id;
    if let Some(dir) = cfg.ledger.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            AgentError::Fatal(format!("privacy ledger folder {}: {e}", dir.display()))
        })?;
    }
    let ledger = LocalLedger::open(&cfg.ledger, dataset).await?;
    match ledger.register(fingerprint, cfg.budget).await? {
        Registration::New => tracing::info!(
            dataset = %dataset,
            ledger = %cfg.ledger.display(),
            "new dataset registered in the privacy ledger"
        ),
        Registration::Known => {}
        Registration::ContentChanged { previous } => tracing::warn!(
            dataset = %dataset,
            fingerprint,
            previous_fingerprint = %previous,
            "THE DATA FILE CHANGED since this dataset was last served (its sha256 differs). Its past privacy spend \
             stands and keeps counting against its budget; if this is a different dataset, give it its own \
             dataset id"
        ),
    }
    super::ledger::restrict_permissions(&cfg.ledger)
        .map_err(|e| AgentError::Fatal(format!("privacy ledger permissions: {e}")))?;
    Ok(ledger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_common::preprocessing::FeatureRange;
    use sha2::{Digest, Sha256};

    fn config(dir: &std::path::Path, stats: Option<&str>, allow: bool) -> DataConfig {
        std::fs::write(dir.join("d.csv"), "a,b,y\n1,2,0\n3,6,1\n").unwrap();
        std::fs::write(
            dir.join("s.json"),
            r#"{"feature_names":["a","b"],"mean":[0,0],"std":[1,2]}"#,
        )
        .unwrap();
        DataConfig {
            path: dir.join("d.csv"),
            dataset_id: "ds".into(),
            label: "y".into(),
            features: None,
            stats: stats.map(|s| dir.join(s)),
            allow_non_private_statistics: allow,
        }
    }

    #[test]
    fn given_statistics_are_used_and_the_file_is_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let d = load(&config(dir.path(), Some("s.json"), false)).unwrap();
        assert_eq!(d.statistics, Statistics::Given);
        assert_eq!(d.records.features, [1.0, 1.0, 3.0, 3.0]);
        let bytes = std::fs::read(dir.path().join("d.csv")).unwrap();
        assert_eq!(d.fingerprint, hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn own_statistics_only_when_allowed_and_the_study_ranges_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let d = load(&config(dir.path(), None, false)).unwrap();
        assert_eq!(d.statistics, Statistics::Study);
        assert_eq!(d.records.features, [1.0, 2.0, 3.0, 6.0], "kept raw");
        let ranges = |a: (f64, f64)| Preprocessing {
            feature_ranges: vec![
                FeatureRange {
                    name: "a".into(),
                    min: a.0,
                    max: a.1,
                },
                FeatureRange {
                    name: "b".into(),
                    min: 0.0,
                    max: 8.0,
                },
            ],
            statistics_round: None,
        };
        let scaled = scale_for_study(&d.records, Some(&ranges((1.0, 3.0)))).unwrap();
        assert_eq!(scaled.features, [-1.0, -0.5, 1.0, 0.5]);
        let e = scale_for_study(&d.records, None).unwrap_err();
        assert!(e.contains("feature_ranges") && e.contains("--stats"), "{e}");
        let e = scale_for_study(&d.records, Some(&ranges((3.0, 1.0)))).unwrap_err();
        assert!(e.contains("min < max"), "{e}");
        let mut swapped = ranges((1.0, 3.0));
        swapped.feature_ranges.swap(0, 1);
        let e = scale_for_study(&d.records, Some(&swapped)).unwrap_err();
        assert!(e.contains("--features"), "{e}");
        let d = load(&config(dir.path(), None, true)).unwrap();
        assert_eq!(d.statistics, Statistics::OwnRecords);
        assert_eq!(d.records.features, [-1.0, -1.0, 1.0, 1.0]);
    }
}
