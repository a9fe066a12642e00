//! The demo's data: the bundled dataset read as CSV, split into a held-out test set and non-IID hospital slices,
//! and written back as one CSV file per party. The demo only moves records around; the agents parse their values.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_distr::multi::{Dirichlet, MultiDistribution};

/// The folder with the bundled datasets: `--data-dir`, else the source tree's `data/`, else `./data`.
pub fn data_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = arg {
        return Ok(dir);
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for dir in [source, PathBuf::from("data")] {
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!("bundled datasets not found; pass --data-dir (the repository's data/ folder)")
}

/// A CSV table: the header and the records as read, with each record's class.
pub struct Table {
    header: csv::StringRecord,
    rows: Vec<csv::StringRecord>,
    pub labels: Vec<usize>,
}

impl Table {
    pub fn read(path: &Path, label: &str) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .from_path(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let header = reader
            .headers()
            .with_context(|| format!("{}: no header", path.display()))?
            .clone();
        let label_col = header
            .iter()
            .position(|c| c.trim() == label)
            .with_context(|| format!("{}: no column {label:?}", path.display()))?;
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for record in reader.records() {
            let record = record.with_context(|| format!("reading {}", path.display()))?;
            let line = record.position().map_or(0, |p| p.line());
            let value = record
                .get(label_col)
                .with_context(|| format!("{}:{line}: missing label", path.display()))?;
            let class: usize = value.trim().parse().with_context(|| {
                format!("{}:{line}: label {value:?} is not a class", path.display())
            })?;
            rows.push(record);
            labels.push(class);
        }
        ensure!(rows.len() >= 20, "{}: too few records", path.display());
        Ok(Self {
            header,
            rows,
            labels,
        })
    }

    /// Writes the header and the records at `indices` (in that order) to `path`.
    pub fn write(&self, path: &Path, indices: &[usize]) -> Result<()> {
        let write = || -> Result<()> {
            let mut out = csv::Writer::from_path(path)?;
            out.write_record(&self.header)?;
            for &i in indices {
                out.write_record(&self.rows[i])?;
            }
            out.flush()?;
            Ok(())
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

/// Splits record indices into a held-out test set (`test_fraction` of each class) and `n` equally large hospitals
/// with label skew: each hospital's class mix is drawn from Dirichlet(α) and filled from the remaining records of each
/// class (topped up from the largest remaining classes when one runs out).
pub fn split_non_iid(
    labels: &[usize],
    n: usize,
    alpha: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    ensure!(
        alpha.is_finite() && alpha > 0.0,
        "--dirichlet-alpha must be > 0"
    );
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let classes = labels.iter().copied().max().unwrap_or(0) + 1;
    ensure!(classes >= 2, "label skew needs at least two classes");
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in labels.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut test = Vec::new();
    for idx in &mut by_class {
        idx.shuffle(&mut rng);
        let k = (idx.len() as f64 * test_fraction).round() as usize;
        test.extend(idx.drain(..k));
    }
    let pool: usize = by_class.iter().map(Vec::len).sum();
    ensure!(
        pool / n >= 20,
        "{pool} training records are too few for {n} hospitals (at least 20 each)"
    );
    let dirichlet = Dirichlet::new(&vec![alpha; classes])
        .map_err(|e| anyhow::anyhow!("--dirichlet-alpha {alpha}: {e}"))?;
    let mut hospitals = Vec::with_capacity(n);
    for h in 0..n {
        let size = pool / n + usize::from(h < pool % n);
        let mut mix = vec![0.0; classes];
        dirichlet.sample_to_slice(&mut rng, &mut mix);
        let mut mine = Vec::with_capacity(size);
        for (c, share) in mix.iter().enumerate() {
            let want = (share * size as f64).round() as usize;
            let take = want.min(by_class[c].len()).min(size - mine.len());
            let from = by_class[c].len() - take;
            mine.extend(by_class[c].drain(from..));
        }
        while mine.len() < size {
            let Some(c) = (0..classes).max_by_key(|&c| by_class[c].len()) else {
                break;
            };
            let Some(i) = by_class[c].pop() else { break };
            mine.push(i);
        }
        mine.shuffle(&mut rng);
        hospitals.push(mine);
    }
    Ok((test, hospitals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        (0..300).map(|i| i % 3).collect()
    }

    #[test]
    fn every_record_goes_to_exactly_one_party_and_slices_are_equal() {
        let labels = labels();
        let (test, slices) = split_non_iid(&labels, 4, 1.0, 0.2, 3).unwrap();
        assert_eq!(test.len(), 60, "20 % of each class");
        let mut all: Vec<usize> = test
            .iter()
            .chain(slices.iter().flatten())
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<_>>());
        assert!(slices.iter().all(|s| s.len() == 60));
        // Same seed, same split.
        assert_eq!(
            split_non_iid(&labels, 4, 1.0, 0.2, 3).unwrap(),
            (test, slices)
        );
    }

    #[test]
    fn a_small_alpha_skews_labels_and_a_bad_one_is_refused() {
        let labels = labels();
        // α = 0.05: rand_distr samples through Beta draws here, where normalised Gamma draws underflow to 0/0.
        let (_, slices) = split_non_iid(&labels, 4, 0.05, 0.2, 1).unwrap();
        let majority = |s: &Vec<usize>| {
            (0..3)
                .map(|c| s.iter().filter(|&&i| labels[i] == c).count())
                .max()
                .unwrap_or(0)
        };
        assert!(
            slices.iter().any(|s| majority(s) * 10 >= s.len() * 6),
            "at least one hospital is dominated by one class"
        );
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(split_non_iid(&labels, 4, alpha, 0.2, 1).is_err(), "{alpha}");
        }
        assert!(split_non_iid(&vec![0; 100], 2, 1.0, 0.2, 1).is_err());
    }

    #[test]
    fn a_table_round_trips_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let mut text = String::from("\"note, free text\",y\n");
        for i in 0..25 {
            text.push_str(&format!("\"a, {i}\",{}\n", i % 2));
        }
        std::fs::write(&path, text).unwrap();
        let table = Table::read(&path, "y").unwrap();
        assert_eq!(table.labels.len(), 25);
        let out = dir.path().join("out.csv");
        table.write(&out, &[3, 1]).unwrap();
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "\"note, free text\",y\n\"a, 3\",1\n\"a, 1\",1\n"
        );
        assert!(Table::read(&path, "label").is_err());
    }
}
