//! The dataset the agent serves: its records (read and standardised once at start), the content fingerprint the
//! privacy ledger knows it by, and where its standardisation statistics came from.

use crate::data::{CsvOptions, Dataset, Standardization, read_csv_with_fingerprint};

use super::AgentError;
use super::config::{AgentConfig, DataConfig};
use super::ledger::{LocalLedger, Registration};

/// Labels are checked against the model's classes when a round's model arrives; until then any integer is read.
const MAX_LABEL_CLASSES: usize = 1 << 20;

/// Where the standardisation statistics came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistics {
    /// A file fixed in advance (the study's, from public reference data): nothing about the records.
    Given,
    /// The records' own mean and std, allowed explicitly: NOT covered by the DP guarantee.
    OwnRecords,
}

/// The site's records, standardised, with their fingerprint.
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
         every update it sends; use the study's statistics file (--stats) instead"
    );
}

/// Reads, fingerprints and standardises the site's records (a bad file stops the agent before it enrols).
/// Without a statistics file the configuration must have allowed non-private statistics explicitly.
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
            return Err(AgentError::Fatal(
                "no standardisation statistics given (--stats) and non-private statistics not allowed".into(),
            ));
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
    fn own_statistics_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&config(dir.path(), None, false)).unwrap_err();
        assert!(e.to_string().contains("--stats"), "{e}");
        let d = load(&config(dir.path(), None, true)).unwrap();
        assert_eq!(d.statistics, Statistics::OwnRecords);
        assert_eq!(d.records.features, [-1.0, -1.0, 1.0, 1.0]);
    }
}
