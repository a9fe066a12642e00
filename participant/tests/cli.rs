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

/// A logistic-regression step computed by hand: softmax cross-entropy gradients per example, each clipped to C
/// with factor min(1, C / (‖g‖ + 1e-6)), summed, divided by B, one SGD step without momentum.
fn hand_step(w: &[f64; 6], data: &[([f64; 2], usize)], clip: f64, b: f64, lr: f64) -> [f64; 6] {
    let mut sum = [0.0f64; 6];
    for (x, y) in data {
        let z: Vec<f64> = (0..2)
            .map(|k| w[2 * k] * x[0] + w[2 * k + 1] * x[1] + w[4 + k])
            .collect();
        let m = z[0].max(z[1]);
        let denom = (z[0] - m).exp() + (z[1] - m).exp();
        let e: Vec<f64> = (0..2)
            .map(|k| (z[k] - m).exp() / denom - f64::from(u8::from(k == *y)))
            .collect();
        // Layout: weight [out, in] row-major, then bias.
        let g = [
            e[0] * x[0],
            e[0] * x[1],
            e[1] * x[0],
            e[1] * x[1],
            e[0],
            e[1],
        ];
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let factor = (clip / (norm + 1e-6)).min(1.0);
        for (s, v) in sum.iter_mut().zip(g) {
            *s += factor * v;
        }
    }
    let mut out = *w;
    for (o, s) in out.iter_mut().zip(sum) {
        *o -= lr * s / b;
    }
    out
}

/// Runs `train` with `args` in `dir`; returns (success, stdout, stderr).
fn run_train(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
        .current_dir(dir)
        .arg("train")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_clipping_only_step_from_given_weights_matches_a_hand_computation() {
    use confide_common::model::{ModelSpec, decode_safetensors, encode_safetensors};
    let dir = tempfile::tempdir().unwrap();
    let records = [
        ([1.0, 2.0], 0usize),
        ([-1.0, 0.5], 1),
        ([3.0, -1.0], 1),
        ([0.5, 0.5], 0),
    ];
    let mut csv = String::from("a,b,y\n");
    for (x, y) in &records {
        csv.push_str(&format!("{},{},{y}\n", x[0], x[1]));
    }
    std::fs::write(dir.path().join("d.csv"), &csv).unwrap();
    let spec_path = model(dir.path());
    let spec = ModelSpec::from_json(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    let w0 = [0.1f32, -0.2, 0.3, 0.05, 0.0, 0.1];
    std::fs::write(
        dir.path().join("init.safetensors"),
        encode_safetensors(&spec, &w0).unwrap(),
    )
    .unwrap();
    // q = 1: every record in the one step of the one epoch; B = 3 (not N = 4) to see the divisor.
    let common = [
        "--data",
        "d.csv",
        "--test-data",
        "d.csv",
        "--label",
        "y",
        "--model",
        "model.json",
        "--no-standardize",
        "--epochs",
        "1",
        "--sampling-rate",
        "1",
        "--clip",
        "0.5",
        "--noise-multiplier",
        "0",
        "--learning-rate",
        "0.1",
        "--momentum",
        "0",
        "--json",
    ];
    let (ok, stdout, stderr) = run_train(
        dir.path(),
        &[
            &common[..],
            &[
                "--initial-model",
                "init.safetensors",
                "--expected-batch-size",
                "3",
                "--out",
                "out.safetensors",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("NO privacy guarantee"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["epsilon"], serde_json::Value::Null, "{v}");
    assert_eq!(v["history"][0]["epsilon"], serde_json::Value::Null, "{v}");
    assert_eq!(v["privacy"], "none", "{v}");
    assert_eq!(v["mode"], "clipping_only", "{v}");
    assert_eq!(v["private"], false, "{v}");
    assert_eq!(v["expected_batch_size"], 3.0, "{v}");
    assert_eq!(v["steps"], 1, "{v}");
    let got = decode_safetensors(
        &spec,
        &std::fs::read(dir.path().join("out.safetensors")).unwrap(),
    )
    .unwrap();
    let w = w0.map(f64::from);
    let want = hand_step(&w, &records, 0.5, 3.0, 0.1);
    for (g, e) in got.iter().zip(want) {
        assert!(
            (f64::from(*g) - e).abs() < 1e-6,
            "got {got:?}, want {want:?}"
        );
    }
    // Without --expected-batch-size the divisor is q·N (Opacus), here 4.
    let (ok, stdout, stderr) = run_train(
        dir.path(),
        &[&common[..], &["--initial-model", "init.safetensors"]].concat(),
    );
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["expected_batch_size"], 4.0, "{v}");
    // A private run reports a finite ε and says so.
    let (ok, stdout, stderr) = run_train(
        dir.path(),
        &[&common[..15], &["--noise-multiplier", "1", "--json"]].concat(),
    );
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["privacy"], "differential_privacy", "{v}");
    assert!(v["epsilon"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn an_initial_model_of_another_spec_is_refused() {
    use confide_common::model::{ModelSpec, encode_safetensors};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), "a,b,y\n1,2,0\n3,4,1\n5,6,0\n").unwrap();
    model(dir.path());
    let other =
        ModelSpec::from_json(r#"{"kind":"logistic_regression","input_dim":3,"num_classes":2}"#)
            .unwrap();
    std::fs::write(
        dir.path().join("other.safetensors"),
        encode_safetensors(&other, &other.initial_parameters(0)).unwrap(),
    )
    .unwrap();
    let (ok, _, stderr) = run_train(
        dir.path(),
        &[
            "--data",
            "d.csv",
            "--label",
            "y",
            "--model",
            "model.json",
            "--epochs",
            "1",
            "--sampling-rate",
            "0.5",
            "--clip",
            "1",
            "--noise-multiplier",
            "1",
            "--initial-model",
            "other.safetensors",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("other.safetensors") && stderr.contains("not the one of --model"),
        "{stderr}"
    );
}
