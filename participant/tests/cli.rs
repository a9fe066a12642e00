//! `confide-participant train` refuses bad input before training anything.

use std::path::PathBuf;
use std::process::Command;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "confide-participant-cli-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn model(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("model.json");
    std::fs::write(
        &path,
        r#"{"kind":"logistic_regression","input_dim":2,"num_classes":2}"#,
    )
    .unwrap();
    path
}

/// Runs `train` on `csv`; returns (success, stderr, whether the output model was written).
fn train(name: &str, csv: &str, extra: &[&str]) -> (bool, String, bool) {
    let dir = temp_dir(name);
    let data = dir.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let out = dir.join("out.safetensors");
    let output = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
        .args([
            "train",
            "--label",
            "y",
            "--epochs",
            "1",
            "--sampling-rate",
            "0.5",
            "--clip",
            "1",
        ])
        .args(["--noise-multiplier", "1", "--delta", "1e-5"])
        .arg("--data")
        .arg(&data)
        .arg("--model")
        .arg(model(&dir))
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let written = out.exists();
    std::fs::remove_dir_all(&dir).ok();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        written,
    )
}

#[test]
fn bad_csv_files_are_reported_with_line_and_column_and_nothing_is_trained() {
    let cases = [
        ("empty", "", "file is empty"),
        (
            "missing",
            "a,b,label\n1,2,0\n",
            "line 1: no column named 'y'",
        ),
        (
            "numeric",
            "a,b,y\n1,2,0\n1,x,1\n",
            "line 3, column 'b': 'x' is not a finite number",
        ),
        (
            "label",
            "a,b,y\n1,2,0\n1,2,7\n",
            "line 3, column 'y': label '7' is not an integer class in 0..2",
        ),
        (
            "ragged",
            "a,b,y\n1,2,0\n1,2\n",
            "line 3: expected 3 fields like the header, found 2",
        ),
    ];
    for (name, csv, message) in cases {
        let (ok, stderr, written) = train(name, csv, &[]);
        assert!(!ok, "{name}: should fail");
        assert!(
            stderr.contains("data.csv") && stderr.contains(message),
            "{name}: {stderr}"
        );
        assert!(!written, "{name}: no model may be written");
    }
}

#[test]
fn wrong_feature_selection_and_unsupported_model_are_refused() {
    let (ok, stderr, written) = train("features", "a,b,c,y\n1,2,3,0\n", &["--features", "a,b,c"]);
    assert!(!ok && !written);
    assert!(
        stderr.contains("3 feature columns selected") && stderr.contains("expects 2"),
        "{stderr}"
    );

    let dir = temp_dir("unsupported");
    let data = dir.join("d.csv");
    std::fs::write(&data, "a,y\n1,0\n2,1\n3,0\n").unwrap();
    let spec = dir.join("m.json");
    std::fs::write(
        &spec,
        r#"{"kind":"sequential","input_shape":[1],"layers":[
            {"type":"linear","in_features":1,"out_features":2},{"type":"layer_norm","features":2}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
        .args([
            "train",
            "--label",
            "y",
            "--epochs",
            "1",
            "--sampling-rate",
            "0.5",
            "--clip",
            "1",
        ])
        .args(["--noise-multiplier", "1"])
        .arg("--data")
        .arg(&data)
        .arg("--model")
        .arg(&spec)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("layer 1 (layer_norm)") && stderr.contains("cannot clip"),
        "{stderr}"
    );
}
