//! Tabular training data: CSV reading with precise error messages, standardisation and a seeded
//! train/test split.
//!
//! A file is read completely and checked before anything is trained: every error names the file,
//! the 1-based line and the column. Values are never echoed into messages beyond the offending cell
//! (which the operator already has), and nothing is logged.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Largest CSV file read (bytes); bigger files are rejected before reading.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Why a data file was rejected.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: file is empty (expected a header line)")]
    Empty { file: String },
    #[error("{file}: no data rows after the header")]
    NoRows { file: String },
    #[error("{file}: line 1: no column named '{column}' in the header (columns: {available})")]
    MissingColumn {
        file: String,
        column: String,
        available: String,
    },
    #[error("{file}: line 1: column '{column}' appears more than once in the header")]
    DuplicateColumn { file: String, column: String },
    #[error("{file}: line {line}: expected {expected} fields like the header, found {found}")]
    RaggedRow {
        file: String,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{file}: line {line}, column '{column}': '{value}' is not a finite number")]
    NotNumeric {
        file: String,
        line: usize,
        column: String,
        value: String,
    },
    #[error(
        "{file}: line {line}, column '{column}': label '{value}' is not an integer class in 0..{num_classes}"
    )]
    LabelOutOfRange {
        file: String,
        line: usize,
        column: String,
        value: String,
        num_classes: usize,
    },
    #[error("{file}: {found} feature columns selected, the model expects {expected}")]
    WrongFeatureCount {
        file: String,
        expected: usize,
        found: usize,
    },
    #[error("standardisation statistics: {0}")]
    Stats(String),
}

/// Records in memory: row-major features and integer class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    /// `len() × num_features()` values, row-major.
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Row `i` of the features.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.num_features();
        &self.features[i * d..(i + 1) * d]
    }

    /// The records at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.num_features());
        for &i in indices {
            features.extend_from_slice(self.row(i));
        }
        Dataset {
            feature_names: self.feature_names.clone(),
            features,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Shuffles with `seed` and splits off `test_fraction` of the records (at least one record on
    /// each side when there are two or more). Returns `(train, test)`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
        let mut n_test = (self.len() as f64 * test_fraction.clamp(0.0, 1.0)).round() as usize;
        if self.len() >= 2 {
            n_test = n_test.clamp(1, self.len() - 1);
        }
        let (test, train) = order.split_at(n_test);
        (self.select(train), self.select(test))
    }
}

/// Per-feature mean and standard deviation used to standardise inputs.
///
/// Computed from the training records, these statistics are *not* covered by the DP guarantee;
/// for a fully private run pass statistics fixed in advance (e.g. from a public reference or the
/// feature's known range) with `--stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    pub feature_names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardization {
    /// Mean and (population) standard deviation of each feature; constant features get std 1.
    pub fn compute(data: &Dataset) -> Standardization {
        let d = data.num_features();
        let n = data.len().max(1) as f64;
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for i in 0..data.len() {
            for (j, &x) in data.row(i).iter().enumerate() {
                mean[j] += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for i in 0..data.len() {
            for (j, &x) in data.row(i).iter().enumerate() {
                sq[j] += (f64::from(x) - mean[j]).powi(2);
            }
        }
        let std = sq
            .iter()
            .map(|s| {
                let v = (s / n).sqrt();
                if v > 1e-12 { v as f32 } else { 1.0 }
            })
            .collect();
        Standardization {
            feature_names: data.feature_names.clone(),
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Reads statistics fixed in advance (the JSON `confide-participant stats` writes); `check` them against the data.
    pub fn read(path: &Path) -> Result<Standardization, DataError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            file: file.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| DataError::Stats(format!("{file}: invalid statistics JSON: {e}")))
    }

    /// Checks that the statistics describe exactly `data`'s features and are usable.
    pub fn check(&self, data: &Dataset) -> Result<(), DataError> {
        if self.feature_names != data.feature_names {
            return Err(DataError::Stats(format!(
                "statistics are for features {:?}, the data has {:?}",
                self.feature_names, data.feature_names
            )));
        }
        if self.mean.len() != self.feature_names.len() || self.std.len() != self.feature_names.len()
        {
            return Err(DataError::Stats(
                "mean and std must have one value per feature".into(),
            ));
        }
        if let Some(j) =
            (0..self.std.len()).find(|&j| !(self.std[j] > 0.0 && self.std[j].is_finite()))
        {
            return Err(DataError::Stats(format!(
                "std of '{}' must be a finite number > 0",
                self.feature_names[j]
            )));
        }
        if let Some(j) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(DataError::Stats(format!(
                "mean of '{}' must be finite",
                self.feature_names[j]
            )));
        }
        Ok(())
    }

    /// Standardises `data` in place (call [`Self::check`] first).
    pub fn apply(&self, data: &mut Dataset) {
        let d = data.num_features();
        for row in data.features.chunks_exact_mut(d) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = (*x - m) / s;
            }
        }
    }
}

/// What to read from a CSV file.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub label: String,
    /// Feature columns in this order; `None` = every column except the label, in file order.
    pub features: Option<Vec<String>>,
    /// Labels must be integers in `0..num_classes`.
    pub num_classes: usize,
}

/// Reads and checks a CSV file (see [`parse_csv`]).
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    Ok(read_csv_with_fingerprint(path, options)?.0)
}

/// [`read_csv`], also returning the sha256 (hex) of exactly the bytes that were parsed: the content
/// fingerprint under which the agent's privacy ledger knows this data.
pub fn read_csv_with_fingerprint(
    path: &Path,
    options: &CsvOptions,
) -> Result<(Dataset, String), DataError> {
    let file = path.display().to_string();
    let io = |source| DataError::Io {
        file: file.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(DataError::Io {
            file: file.clone(),
            source: std::io::Error::other(format!("file is larger than {MAX_FILE_BYTES} bytes")),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let fingerprint = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|e| DataError::Io {
        file: file.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    Ok((parse_csv(&file, &text, options)?, fingerprint))
}

/// Parses CSV text with a header line (RFC 4180 through the `csv` crate: a quoted field may hold commas, quotes
/// and line breaks). Whitespace around fields is ignored; blank lines are skipped. `file` names the source in error
/// messages.
pub fn parse_csv(file: &str, text: &str, options: &CsvOptions) -> Result<Dataset, DataError> {
    let file = file.to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader
        .records()
        .map(|r| {
            r.map_err(|e| DataError::Io {
                file: file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })
        })
        .filter(|r| r.as_ref().map_or(true, |rec| !is_blank(rec)));
    let Some(header) = records.next().transpose()? else {
        return Err(DataError::Empty { file });
    };
    let columns: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(DataError::DuplicateColumn {
                file,
                column: c.clone(),
            });
        }
    }
    let find = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| DataError::MissingColumn {
                file: file.clone(),
                column: name.to_string(),
                available: columns.join(", "),
            })
    };
    let label_index = find(&options.label)?;
    let feature_indices: Vec<usize> = match &options.features {
        Some(names) => names.iter().map(|n| find(n)).collect::<Result<_, _>>()?,
        None => (0..columns.len()).filter(|&i| i != label_index).collect(),
    };
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for record in records {
        let fields = record?;
        // The line the record starts on (1-based, as an editor shows it), counted only for an error message. The
        // reader's position is where it started looking: before the previous line's end and any blank lines.
        let line = || {
            let from = fields
                .position()
                .map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
                .min(text.len());
            let bytes = text.as_bytes();
            let start = bytes[from..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .map_or(bytes.len(), |i| from + i);
            1 + bytes[..start].iter().filter(|&&b| b == b'\n').count()
        };
        if fields.len() != columns.len() {
            return Err(DataError::RaggedRow {
                file,
                line: line(),
                expected: columns.len(),
                found: fields.len(),
            });
        }
        for &j in &feature_indices {
            let value = fields[j].trim();
            match value.parse::<f32>() {
                Ok(x) if x.is_finite() => features.push(x),
                _ => {
                    return Err(DataError::NotNumeric {
                        file,
                        line: line(),
                        column: columns[j].clone(),
                        value: value.to_string(),
                    });
                }
            }
        }
        let raw = fields[label_index].trim();
        let label = raw.parse::<f64>().ok().filter(|v| {
            v.is_finite() && v.fract() == 0.0 && *v >= 0.0 && *v < options.num_classes as f64
        });
        match label {
            Some(v) => labels.push(v as i64),
            None => {
                return Err(DataError::LabelOutOfRange {
                    file,
                    line: line(),
                    column: options.label.clone(),
                    value: raw.to_string(),
                    num_classes: options.num_classes,
                });
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::NoRows { file });
    }
    Ok(Dataset {
        feature_names: feature_indices
            .iter()
            .map(|&j| columns[j].clone())
            .collect(),
        features,
        labels,
    })
}

/// A line with nothing but whitespace. (Fields are trimmed where they are read: the `csv` crate's own trimming
/// drops the record's position, which error messages need.)
fn is_blank(record: &csv::StringRecord) -> bool {
    record.len() == 1 && record[0].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(label: &str, num_classes: usize) -> CsvOptions {
        CsvOptions {
            label: label.into(),
            features: None,
            num_classes,
        }
    }

    #[test]
    fn parses_and_selects_features() {
        let text = "a,b,y\n1,2,0\n\n3.5,\"4\",1\r\n";
        let d = parse_csv("t.csv", text, &opts("y", 2)).unwrap();
        assert_eq!(d.feature_names, ["a", "b"]);
        assert_eq!(d.features, [1.0, 2.0, 3.5, 4.0]);
        assert_eq!(d.labels, [0, 1]);
        let o = CsvOptions {
            features: Some(vec!["b".into()]),
            ..opts("y", 2)
        };
        let d = parse_csv("t.csv", text, &o).unwrap();
        assert_eq!(d.features, [2.0, 4.0]);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e =
            |text: &str, o: CsvOptions| parse_csv("data.csv", text, &o).unwrap_err().to_string();
        assert_eq!(
            e("", opts("y", 2)),
            "data.csv: file is empty (expected a header line)"
        );
        assert_eq!(
            e("a,y\n", opts("y", 2)),
            "data.csv: no data rows after the header"
        );
        let missing = e("a,b\n1,2\n", opts("y", 2));
        assert!(
            missing.starts_with("data.csv: line 1: no column named 'y'"),
            "{missing}"
        );
        let missing_feature = e(
            "a,y\n1,0\n",
            CsvOptions {
                features: Some(vec!["zz".into()]),
                ..opts("y", 2)
            },
        );
        assert!(
            missing_feature.contains("no column named 'zz'"),
            "{missing_feature}"
        );
        assert_eq!(
            e("a,y\n1,0\n2,x\n", opts("y", 2)),
            "data.csv: line 3, column 'y': label 'x' is not an integer class in 0..2"
        );
        assert_eq!(
            e("a,y\n1,0\n2,2\n", opts("y", 2)),
            "data.csv: line 3, column 'y': label '2' is not an integer class in 0..2"
        );
        assert_eq!(
            e("a,y\n1,0\nabc,1\n", opts("y", 2)),
            "data.csv: line 3, column 'a': 'abc' is not a finite number"
        );
        assert_eq!(
            e("a,y\n1,0\nNaN,1\n", opts("y", 2)),
            "data.csv: line 3, column 'a': 'NaN' is not a finite number"
        );
        assert_eq!(
            e("a,b,y\n1,2,0\n1,1\n", opts("y", 2)),
            "data.csv: line 3: expected 3 fields like the header, found 2"
        );
        assert!(e("a,a,y\n1,2,0\n", opts("y", 2)).contains("more than once"));
    }

    #[test]
    fn quoted_fields_and_headers_follow_rfc_4180() {
        // A hospital export: quoted headers (one with a comma in its name), a quoted number, blank and
        // whitespace-only lines, CRLF endings.
        let text = "\"age, years\",\"note\",\"y\"\r\n\r\n\"61\",\"stable, discharged\",0\r\n   \r\n 70 ,\"said \"\"ok\"\"\",1\r\n";
        let o = CsvOptions {
            features: Some(vec!["age, years".into()]),
            ..opts("y", 2)
        };
        let d = parse_csv("t.csv", text, &o).unwrap();
        assert_eq!(d.feature_names, ["age, years"]);
        assert_eq!(d.features, [61.0, 70.0]);
        assert_eq!(d.labels, [0, 1]);
        // The comma inside the quotes does not make a ragged row; a text column is still refused as a feature,
        // on the line it is on.
        assert_eq!(
            parse_csv("t.csv", text, &opts("y", 2))
                .unwrap_err()
                .to_string(),
            "t.csv: line 3, column 'note': 'stable, discharged' is not a finite number"
        );
        // A quoted field may span lines; the error names the line its record starts on.
        let multi = "a,y\n1,0\n\"2\n\",x\n";
        assert_eq!(
            parse_csv("t.csv", multi, &opts("y", 2))
                .unwrap_err()
                .to_string(),
            "t.csv: line 3, column 'y': label 'x' is not an integer class in 0..2"
        );
    }

    #[test]
    fn standardisation_and_split() {
        let text = "a,b,y\n1,5,0\n3,5,1\n5,5,0\n7,5,1\n";
        let mut d = parse_csv("t.csv", text, &opts("y", 2)).unwrap();
        let s = Standardization::compute(&d);
        assert_eq!(s.mean, [4.0, 5.0]);
        assert!((s.std[0] - 5f32.sqrt()).abs() < 1e-6);
        assert_eq!(s.std[1], 1.0, "constant feature gets std 1");
        s.check(&d).unwrap();
        s.apply(&mut d);
        assert!((d.features[0] + 3.0 / 5f32.sqrt()).abs() < 1e-6);
        let bad = Standardization {
            std: vec![1.0, 0.0],
            ..s.clone()
        };
        assert!(
            bad.check(&d)
                .unwrap_err()
                .to_string()
                .contains("std of 'b'")
        );

        let (train, test) = d.split(0.25, 3);
        assert_eq!((train.len(), test.len()), (3, 1));
        let (train2, _) = d.split(0.25, 3);
        assert_eq!(train, train2, "same seed, same split");
        let mut all: Vec<f32> = train
            .features
            .iter()
            .chain(&test.features)
            .copied()
            .collect();
        let mut orig = d.features.clone();
        all.sort_by(f32::total_cmp);
        orig.sort_by(f32::total_cmp);
        assert_eq!(all, orig);
    }
}
