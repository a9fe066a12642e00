//! `evaluate`, `budget` and `run`'s start-up checks as a user meets them (no coordinator needed).

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_confide-participant"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A separable two-feature data set: y = 1 iff a + b > 0.
fn separable(n: usize) -> String {
    let mut csv = String::from("a,b,y\n");
    for i in 0..n {
        let a = ((i * 37) % 101) as f32 / 50.0 - 1.0;
        let b = ((i * 53) % 97) as f32 / 48.0 - 1.0;
        csv.push_str(&format!("{a},{b},{}\n", u8::from(a + b > 0.0)));
    }
    csv
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn evaluate_scores_a_saved_model_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.csv", &separable(400));
    let spec = write(
        dir.path(),
        "m.json",
        r#"{"kind":"logistic_regression","input_dim":2,"num_classes":2}"#,
    );
    let model = dir.path().join("m.safetensors");
    let out = bin()
        .args([
            "train",
            "--label",
            "y",
            "--epochs",
            "5",
            "--sampling-rate",
            "0.1",
        ])
        .args(["--clip", "1", "--non-private", "--no-standardize"])
        .arg("--data")
        .arg(&data)
        .arg("--model")
        .arg(&spec)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));

    let out = bin()
        .args(["evaluate", "--label", "y", "--no-standardize", "--json"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["accuracy", "loss", "records"]);
    assert_eq!(v["records"], 400);
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{v}");
    assert!(v["loss"].as_f64().unwrap() > 0.0);

    // A table without --json; errors name what is wrong.
    let out = bin()
        .args(["evaluate", "--label", "y", "--no-standardize"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(text(&out).0.contains("on 400 records"));
    let three = write(dir.path(), "three.csv", "a,b,c,y\n1,2,3,0\n");
    let out = bin()
        .args(["evaluate", "--label", "y", "--json"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&three)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("3 feature columns selected"),
        "{:?}",
        text(&out)
    );
    let junk = write(dir.path(), "junk.safetensors", "not a model");
    let out = bin()
        .args(["evaluate", "--label", "y"])
        .arg("--model")
        .arg(&junk)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("junk.safetensors"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn budget_of_an_empty_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["budget", "--json", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(v, serde_json::json!({"datasets": [], "studies": []}));
    let out = bin()
        .args(["budget", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(text(&out).0.contains("no privacy spent yet"));
}

#[test]
fn run_refuses_bad_configuration_before_contacting_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.csv", &separable(20));
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = bin();
        cmd.arg("run").args(args);
        for k in [
            "CONFIDE_ENROLMENT_TOKEN",
            "CONFIDE_STATE_DIR",
            "CONFIDE_CONFIG",
            "CONFIDE_COORDINATOR_URL",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        text(&out).1
    };
    let e = run(&[], &[]);
    assert!(
        e.contains("--state-dir") && e.contains("CONFIDE_STATE_DIR"),
        "{e}"
    );

    let config = write(
        dir.path(),
        "p.toml",
        "state_dir = \"state\"\nenrolment_token = \"abc\"\n[data]\npath = \"d.csv\"\nlabel = \"y\"\n",
    );
    let e = run(&["--config", config.to_str().unwrap()], &[]);
    assert!(e.contains("not read from the config file"), "{e}");

    // Without statistics fixed in advance: the study's public feature ranges will scale the records, so the agent
    // goes on (to the enrolment, which needs a token) without any warning about non-private statistics.
    let config = write(
        dir.path(),
        "nostats.toml",
        "coordinator_url = \"http://127.0.0.1:9\"\nstate_dir = \"state\"\nname = \"h\"\n\
         [data]\npath = \"d.csv\"\ndataset_id = \"h-records\"\nlabel = \"y\"\n\
         [budget]\nepsilon = 1.0\ndelta = 1e-5\n",
    );
    let e = run(&["--config", config.to_str().unwrap()], &[]);
    assert!(
        !e.contains("NON-PRIVATE") && e.contains("study's public feature ranges"),
        "{e}"
    );
    assert!(e.contains("enrol with --enrolment-token"), "{e}");
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    // Allowed explicitly: it goes on (to the enrolment, which needs a token) with a loud warning.
    let e = run(
        &[
            "--config",
            config.to_str().unwrap(),
            "--allow-non-private-statistics",
        ],
        &[],
    );
    assert!(e.contains("NON-PRIVATE STATISTICS"), "{e}");
    assert!(e.contains("enrol with --enrolment-token"), "{e}");
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();

    // Valid configuration (file + env), but never enrolled and no token.
    write(
        dir.path(),
        "stats.json",
        r#"{"feature_names":["a","b"],"mean":[0,0],"std":[1,1]}"#,
    );
    let config = write(
        dir.path(),
        "ok.toml",
        "coordinator_url = \"http://127.0.0.1:9\"\nstate_dir = \"state\"\nname = \"h\"\n\
         [data]\npath = \"d.csv\"\ndataset_id = \"h-records\"\nlabel = \"y\"\nstats = \"stats.json\"\n\
         [budget]\nepsilon = 1.0\ndelta = 1e-5\n",
    );
    let e = run(&["--config", config.to_str().unwrap()], &[]);
    assert!(!e.contains("NON-PRIVATE"), "{e}");
    assert!(e.contains("enrol with --enrolment-token"), "{e}");
    assert!(dir.path().join("state").is_dir(), "state dir created");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // A data file that does not parse stops the agent before it enrols.
    let e = run(
        &["--config", config.to_str().unwrap(), "--label", "nope"],
        &[("CONFIDE_ENROLMENT_TOKEN", "t")],
    );
    assert!(e.contains("no column named 'nope'"), "{e}");

    // The data's content is registered with its dataset id: the same bytes under another id are refused...
    let e = run(
        &[
            "--config",
            config.to_str().unwrap(),
            "--dataset-id",
            "renamed",
        ],
        &[],
    );
    assert!(
        e.contains("already registered in the privacy ledger as dataset 'h-records'"),
        "{e}"
    );
    // ...while new bytes under the known id are served with a loud warning (the past spend stands).
    std::fs::write(&data, separable(21)).unwrap();
    let e = run(&["--config", config.to_str().unwrap()], &[]);
    assert!(e.contains("THE DATA FILE CHANGED"), "{e}");
    assert!(e.contains("enrol with --enrolment-token"), "{e}");
    // `budget --config` finds the ledger and shows the dataset.
    let out = bin()
        .args(["budget", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Per dataset") && stdout.contains("h-records"),
        "{stdout}"
    );
}
