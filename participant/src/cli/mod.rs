//! The `confide-participant` commands that need more than a few lines (`train`, `budget`), and the binary's
//! process-wide start-up setting ([`memory`]).

pub mod budget;
pub mod memory;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use confide_common::model::ModelSpec;
use confide_participant::data::{CsvOptions, Dataset, Standardization, read_csv};

/// The CSV columns every data command reads.
#[derive(Args)]
pub struct CsvArgs {
    /// CSV file with a header line.
    #[arg(long)]
    pub data: PathBuf,
    /// Name of the label column (integer classes 0..num_classes).
    #[arg(long)]
    pub label: String,
    /// Feature columns, comma-separated (default: every column but the label).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
}

impl CsvArgs {
    /// Reads the records for `spec` (the model in file `model`): labels in its classes, exactly its input width.
    pub fn read_for(&self, spec: &ModelSpec, model: &Path) -> Result<Dataset> {
        let data = read_csv(&self.data, &self.options(spec.num_classes()))?;
        if data.num_features() != spec.input_dim() {
            bail!(
                "{}: {} feature columns selected, the model {} expects {}",
                self.data.display(),
                data.num_features(),
                model.display(),
                spec.input_dim()
            );
        }
        Ok(data)
    }

    pub fn options(&self, num_classes: usize) -> CsvOptions {
        CsvOptions {
            label: self.label.clone(),
            features: self.features.clone(),
            num_classes,
        }
    }
}

pub fn read_spec(path: &Path) -> Result<ModelSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model spec {}", path.display()))?;
    ModelSpec::from_json(&text).with_context(|| format!("model spec {}", path.display()))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    confide_runtime::tokio_runtime().context("starting the async runtime")
}

/// Standardises `sets` with the statistics file `stats`, or else with the statistics of `sets[0]` (the records the
/// command fits on): `train` and `evaluate` scale their records the same way.
pub fn standardize(stats: Option<&Path>, sets: &mut [&mut Dataset]) -> Result<()> {
    let Some(first) = sets.first() else {
        return Ok(());
    };
    let standardization = match stats {
        Some(path) => Standardization::read(path)?,
        None => Standardization::compute(first),
    };
    standardization.check(first)?;
    for set in sets.iter_mut() {
        standardization.apply(set);
    }
    Ok(())
}
