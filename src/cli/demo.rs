//! `confide demo`: the whole system on one machine. A coordinator on an embedded SQLite file and a loopback port,
//! N participant agents as separate processes talking real HTTP, the bundled dataset split non-IID across them with
//! a held-out test set, R secure-aggregation rounds of DP-SGD, and the non-private centralised baseline beside it.
//!
//! The demo plays the operator (it creates the study, hands out enrolment tokens, starts rounds) and an evaluator
//! holding the public test set. It never sees a hospital's update: it scores the published global models only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};
use confide_client::CoordinatorClient;
use confide_common::api::{
    CreateEnrolmentTokenRequest, CreateStudyRequest, MemberSet, RoundInfo, RoundOutcome,
    StartRoundRequest,
};
use confide_common::dp::{AccountantKind, PrivacyEvent, PrivacyLedger, calibrate};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Gamma};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoDataset {
    /// Wisconsin diagnostic breast cancer (569 records, 30 features, 2 classes), logistic regression.
    BreastCancer,
    /// UCI 8×8 handwritten digits (1,797 records, 64 pixels, 10 classes), a small MLP.
    Digits,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of hospitals (participant agents); at least 3, the fewest inputs a round may publish.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(3..=32))]
    participants: u32,
    /// Federated rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=200))]
    rounds: u32,
    #[arg(long, value_enum, default_value_t = DemoDataset::BreastCancer)]
    dataset: DemoDataset,
    /// Privacy budget ε of every hospital over the whole study (the noise is calibrated to it, PLD accountant).
    /// Default: 1 for breast-cancer, 3 for digits.
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// δ of every hospital's (ε, δ) guarantee.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Dirichlet concentration of the label skew across hospitals (smaller = more non-IID).
    #[arg(long, default_value_t = 1.0)]
    dirichlet_alpha: f64,
    /// Seed of the data split and the initial weights (noise is always seeded by the OS).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the coordinator database, the hospitals' data slices, state and logs go (default: a fresh temporary
    /// directory, removed at the end unless --keep).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (logs, database, models) after the demo.
    #[arg(long)]
    keep: bool,
    /// Folder with `confide-coordinator` and `confide-participant` (default: beside this executable).
    #[arg(long, env = "CONFIDE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Folder with the bundled datasets (default: the source tree's `data/`, then `./data`).
    #[arg(long, env = "CONFIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use this running coordinator instead of starting one (e.g. to feed a Prometheus/Grafana stack).
    #[arg(long, env = "COORDINATOR_URL", requires = "operator_token")]
    coordinator_url: Option<String>,
    /// Operator token for --coordinator-url (`confide-coordinator token create`).
    #[arg(long, env = "CONFIDE_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one dataset needs: file, label, model and the DP-SGD hyper-parameters the study prescribes.
struct Preset {
    file: &'static str,
    label: &'static str,
    model_spec: &'static str,
    default_epsilon: f64,
    sampling_rate: f64,
    local_epochs: u32,
    clip_norm: f64,
    learning_rate: f64,
    momentum: f64,
    /// Epochs of the centralised non-private baseline.
    baseline_epochs: u64,
}

fn preset(dataset: DemoDataset) -> Preset {
    match dataset {
        DemoDataset::BreastCancer => Preset {
            file: "breast_cancer_wisconsin.csv",
            label: "malignant",
            model_spec: include_str!("../../examples/models/breast_cancer_logreg.json"),
            default_epsilon: 1.0,
            sampling_rate: 0.2,
            local_epochs: 2,
            clip_norm: 1.0,
            learning_rate: 0.1,
            momentum: 0.9,
            baseline_epochs: 30,
        },
        DemoDataset::Digits => Preset {
            file: "digits_8x8.csv",
            label: "digit",
            model_spec: include_str!("../../examples/models/digits_mlp.json"),
            default_epsilon: 3.0,
            sampling_rate: 0.1,
            local_epochs: 2,
            clip_norm: 1.0,
            learning_rate: 0.2,
            momentum: 0.9,
            baseline_epochs: 30,
        },
    }
}

/// One line of the demo's report: how a round went.
#[derive(Serialize)]
struct RoundResult {
    round: u32,
    outcome: RoundOutcome,
    reason: Option<String>,
    test_accuracy: Option<f64>,
    epsilon_max: f64,
    participants_selected: usize,
    participants_aggregated: usize,
    dropouts: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct DemoSummary {
    dataset: &'static str,
    participants: u32,
    rounds_requested: u32,
    rounds_completed: u32,
    test_accuracy: Option<f64>,
    baseline_accuracy: f64,
    epsilon_max: f64,
    epsilon_target: f64,
    delta: f64,
    noise_multiplier: f64,
    records_per_hospital: Vec<usize>,
    test_records: usize,
    rounds: Vec<RoundResult>,
    work_dir: Option<String>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = confide_runtime::tokio_runtime().context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

/// Child processes, killed on every exit path (SIGTERM first, so agents finish a durable write).
struct Children(Vec<(String, Child)>);

impl Children {
    fn stop_all(&mut self) {
        for (_, child) in &mut self.0 {
            terminate(child);
        }
        let until = Instant::now() + Duration::from_secs(10);
        for (name, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Ok(None) => {
                        eprintln!("{name} did not stop after SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Asks a child to stop (SIGTERM); one that has already exited is left alone.
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    }
}

fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn find_binary(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} not found; build the workspace first (`cargo build --release --workspace`, which scripts/demo.sh does) \
         or point --bin-dir at the folder holding it",
        path.display()
    );
    Ok(path)
}

fn data_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
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

/// A CSV table: header plus rows kept as text (the demo only moves rows around; the agents parse them).
struct Table {
    header: String,
    rows: Vec<String>,
    labels: Vec<usize>,
}

fn read_table(path: &Path, label: &str) -> Result<Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?
        .to_string();
    let label_col = header
        .split(',')
        .position(|c| c.trim() == label)
        .with_context(|| format!("{}: no column {label:?}", path.display()))?;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = line
            .split(',')
            .nth(label_col)
            .with_context(|| format!("{}:{}: missing label", path.display(), i + 2))?;
        let class: usize = value.trim().parse().with_context(|| {
            format!(
                "{}:{}: label {value:?} is not a class",
                path.display(),
                i + 2
            )
        })?;
        rows.push(line.to_string());
        labels.push(class);
    }
    ensure!(rows.len() >= 20, "{}: too few records", path.display());
    Ok(Table {
        header,
        rows,
        labels,
    })
}

fn write_rows(path: &Path, header: &str, rows: &[&str]) -> Result<()> {
    let mut out = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 256);
    out.push_str(header);
    out.push('\n');
    for r in rows {
        out.push_str(r);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Splits record indices into a held-out test set (`test_fraction` of each class) and `n` equally large hospitals
/// with label skew: each hospital's class mix is drawn from Dirichlet(α) and filled from the remaining records of each
/// class (topped up from the largest remaining classes when one runs out).
fn split_non_iid(
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
    let gamma = Gamma::new(alpha, 1.0).context("Dirichlet concentration")?;
    let mut hospitals = Vec::with_capacity(n);
    for h in 0..n {
        let size = pool / n + usize::from(h < pool % n);
        let g: Vec<f64> = (0..classes).map(|_| gamma.sample(&mut rng)).collect();
        let total: f64 = g.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut mine = Vec::with_capacity(size);
        for (c, gc) in g.iter().enumerate() {
            let want = ((gc / total) * size as f64).round() as usize;
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

/// The smallest σ whose whole-study ledger (one event per round, as the coordinator and agents record it) stays
/// within the target under the PLD accountant.
fn calibrate_sigma(
    target: f64,
    delta: f64,
    q: f64,
    steps_per_round: u64,
    rounds: u32,
) -> Result<f64> {
    let mut sigma = calibrate::noise_multiplier_for_target(
        target,
        delta,
        q,
        steps_per_round * u64::from(rounds),
        AccountantKind::Pld,
    )
    .context("calibrating the noise multiplier")?;
    // The ledger holds R events rather than one merged event; its PLD value can differ by discretisation, so step σ
    // up on the calibration grid until the ledger itself fits.
    for _ in 0..1000 {
        let mut ledger = PrivacyLedger::new();
        for _ in 0..rounds {
            ledger.record(PrivacyEvent::SubsampledGaussian {
                sampling_rate: q,
                noise_multiplier: sigma,
                steps: steps_per_round,
            })?;
        }
        if ledger.epsilon(delta, AccountantKind::Pld)? <= target {
            return Ok(sigma);
        }
        sigma += 0.001;
    }
    bail!("no noise multiplier fits ε = {target}")
}

struct Tools {
    coordinator: PathBuf,
    participant: PathBuf,
}

impl Tools {
    /// Runs `confide-participant evaluate` on a model file and the test set; returns the accuracy.
    fn evaluate(&self, model: &Path, test: &Path, label: &str, stats: &Path) -> Result<f64> {
        let out = Command::new(&self.participant)
            .args(["evaluate", "--json", "--label", label])
            .arg("--model")
            .arg(model)
            .arg("--data")
            .arg(test)
            .arg("--stats")
            .arg(stats)
            .stdin(Stdio::null())
            .output()
            .context("running confide-participant evaluate")?;
        ensure!(
            out.status.success(),
            "evaluating {}: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("evaluate printed no JSON")?;
        v["accuracy"]
            .as_f64()
            .context("evaluate JSON has no accuracy")
    }
}

async fn demo(args: DemoArgs) -> Result<()> {
    let p = preset(args.dataset);
    let target_epsilon = args.target_epsilon.unwrap_or(p.default_epsilon);
    ensure!(
        target_epsilon.is_finite() && target_epsilon > 0.0,
        "--target-epsilon must be > 0"
    );
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    let tools = Tools {
        coordinator: find_binary(&bin_dir, "confide-coordinator")?,
        participant: find_binary(&bin_dir, "confide-participant")?,
    };
    let temp;
    let work: PathBuf = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("confide-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            if args.keep {
                temp.keep()
            } else {
                temp.path().to_path_buf()
            }
        }
    };
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };

    // ---- data: held-out test set, non-IID hospital slices, shared standardisation ----
    let data_path = data_dir(args.data_dir.clone())?.join(p.file);
    let table = read_table(&data_path, p.label)?;
    let n = args.participants as usize;
    let (test_idx, slices) = split_non_iid(&table.labels, n, args.dirichlet_alpha, 0.2, args.seed)?;
    let rows =
        |idx: &[usize]| -> Vec<&str> { idx.iter().map(|&i| table.rows[i].as_str()).collect() };
    let test_csv = work.join("test.csv");
    write_rows(&test_csv, &table.header, &rows(&test_idx))?;
    let pooled: Vec<usize> = slices.iter().flatten().copied().collect();
    let pooled_csv = work.join("pooled-train.csv");
    write_rows(&pooled_csv, &table.header, &rows(&pooled))?;
    for (h, idx) in slices.iter().enumerate() {
        write_rows(
            &work.join(format!("hospital-{}.csv", h + 1)),
            &table.header,
            &rows(idx),
        )?;
    }
    // Standardisation fixed in advance and shared by every hospital (a federated model needs one input scale).
    // It comes from the evaluator's public held-out set, not from any hospital's records.
    let stats_path = work.join("standardization.json");
    write_stats(&tools, &test_csv, p.label, &stats_path)?;
    let model_path = work.join("model.json");
    std::fs::write(&model_path, p.model_spec).context("writing the model spec")?;

    let steps_per_round = (f64::from(p.local_epochs) / p.sampling_rate).ceil() as u64;
    let slice_len = slices.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let expected_batch_size = (p.sampling_rate * slice_len as f64).max(1.0);
    let sigma = calibrate_sigma(
        target_epsilon,
        args.delta,
        p.sampling_rate,
        steps_per_round,
        args.rounds,
    )?;
    say(format!(
        "Confide demo: {} hospitals ({} records each, label skew Dirichlet({})), {} held-out test records, {} rounds",
        n,
        slices
            .iter()
            .map(|s| s.len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        args.dirichlet_alpha,
        test_idx.len(),
        args.rounds
    ));
    say(format!(
        "DP-SGD per hospital: q = {}, {} steps per round, clip C = {}, σ = {sigma:.3} → ε ≤ {target_epsilon} at δ = {} \
         over the study (PLD); secure aggregation over all hospitals",
        p.sampling_rate, steps_per_round, p.clip_norm, args.delta
    ));
    say(format!("work directory: {}", work.display()));

    // ---- the centralised, non-private baseline (what the hospitals could reach by pooling their records) ----
    let baseline = baseline_accuracy(
        &tools,
        &pooled_csv,
        &test_csv,
        &model_path,
        &p,
        &stats_path,
        args.seed,
    )?;

    // ---- coordinator ----
    let mut children = Children(Vec::new());
    let (url, operator_token) = match (&args.coordinator_url, &args.operator_token) {
        (Some(url), Some(token)) => (url.trim_end_matches('/').to_string(), token.clone()),
        _ => start_coordinator(&tools, &work, &mut children)?,
    };
    let op = CoordinatorClient::new(&url, &operator_token);

    // ---- study ----
    let study_request: CreateStudyRequest = serde_json::from_value(serde_json::json!({
        "name": format!("demo-{}-{}", dataset_name(args.dataset), confide_runtime::now_ms() / 1000),
        "model_spec": serde_json::from_str::<serde_json::Value>(p.model_spec)?,
        "initial_weights_seed": args.seed,
        "dp": {
            "sampling_rate": p.sampling_rate,
            "noise_multiplier": sigma,
            "local_epochs": p.local_epochs,
            "clip_norm": p.clip_norm,
            // Public: the study plans for hospitals of about the demo's slice size (no site divides by its own N).
            "expected_batch_size": expected_batch_size,
        },
        "local_training": {"optimizer": "sgd", "learning_rate": p.learning_rate, "momentum": p.momentum},
        "secagg": {
            "threshold": null,
            "graph": {"kind": "complete"},
            // No clip_range: the coordinator derives it from the DP-SGD parameters, so updates are never clamped.
            "quantisation": {"bits": 32},
        },
        "budget": {"epsilon": target_epsilon, "delta": args.delta},
        "rounds": args.rounds,
        "min_participants": 3.max(n as u32 / 2),
        "deadlines": {
            "advertise_keys_secs": 300,
            "share_keys_secs": 60,
            "masked_input_secs": 120,
            "unmasking_secs": 60,
        },
        "server_optimizer": {"kind": "fed_avg", "learning_rate": 1.0},
    }))
    .context("building the study request")?;
    let study = op
        .create_study(&study_request)
        .await
        .context("creating the study")?;

    // ---- hospitals ----
    for h in 1..=n {
        let name = format!("hospital-{h}");
        let token = op
            .create_enrolment_token(
                study.id,
                &CreateEnrolmentTokenRequest {
                    label: name.clone(),
                    expires_in_secs: Some(3600),
                },
            )
            .await
            .context("creating an enrolment token")?;
        let state_dir = work.join(&name);
        std::fs::create_dir_all(&state_dir)?;
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let child = Command::new(&tools.participant)
            .arg("run")
            .arg("--coordinator-url")
            .arg(&url)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--name")
            .arg(&name)
            // The hospital's records: its privacy budget belongs to them, whatever study they serve.
            .arg("--dataset-id")
            .arg(format!("{name}-{}", dataset_name(args.dataset)))
            .arg("--data")
            .arg(work.join(format!("{name}.csv")))
            .arg("--label")
            .arg(p.label)
            .arg("--stats")
            .arg(&stats_path)
            .arg("--epsilon")
            .arg(target_epsilon.to_string())
            .arg("--delta")
            .arg(args.delta.to_string())
            .env("CONFIDE_ENROLMENT_TOKEN", &token.token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the agent of {name}"))?;
        children.0.push((name, child));
    }
    let enrol_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let enrolled = op.list_participants(study.id).await?.len();
        if enrolled >= n {
            break;
        }
        check_children(&mut children, &work)?;
        ensure!(
            Instant::now() < enrol_deadline,
            "only {enrolled} of {n} agents enrolled within 60 s (see the hospital-*.log files in {})",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ---- rounds ----
    let mut results = Vec::new();
    let mut last_accuracy = None;
    if !args.json {
        println!();
        println!(
            "{:>5}  {:<10}  {:>13}  {:>9}  {:>10}  {:>8}  {:>7}",
            "round", "outcome", "test accuracy", "max ε", "aggregated", "dropouts", "time"
        );
    }
    for r in 1..=args.rounds {
        let started = Instant::now();
        let bar = if args.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(4)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "round {prefix:>2} [{bar:24}] {pos}/{len} stages  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(r.to_string());
        let round = op
            .start_round(study.id, &StartRoundRequest::default())
            .await
            .with_context(|| format!("starting round {r}"))?;
        let finished = loop {
            let info = op.get_round(round.id).await?;
            bar.set_position(stage_position(&info));
            bar.set_message(stage_message(&info));
            if info.outcome.is_some() {
                break info;
            }
            check_children(&mut children, &work)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        bar.finish_and_clear();
        let privacy = op.privacy_report(study.id).await?;
        let epsilon_max = privacy
            .participants
            .iter()
            .map(|x| x.epsilon_spent)
            .fold(0.0, f64::max);
        let selected = finished.members(MemberSet::Selected).len();
        let aggregated = finished.members(MemberSet::SentMaskedInput).len();
        let Some(outcome) = finished.outcome else {
            bail!("round {r} ended without an outcome");
        };
        let completed = outcome == RoundOutcome::Completed;
        let accuracy = if completed {
            let versions = op.list_model_versions(study.id).await?;
            let latest = versions
                .iter()
                .filter(|v| v.round_id == Some(finished.id))
                .map(|v| v.version)
                .max()
                .context("a completed round published no model version")?;
            let download = op.download_model_version(study.id, latest).await?;
            let path = work.join(format!("model-v{latest}.safetensors"));
            std::fs::write(&path, &download.bytes)?;
            let acc = tools.evaluate(&path, &test_csv, p.label, &stats_path)?;
            last_accuracy = Some(acc);
            Some(acc)
        } else {
            None
        };
        let row = RoundResult {
            round: r,
            outcome,
            reason: finished.reason.clone(),
            test_accuracy: accuracy,
            epsilon_max,
            participants_selected: selected,
            participants_aggregated: if completed { aggregated } else { 0 },
            dropouts: if completed {
                selected.saturating_sub(aggregated)
            } else {
                selected
            },
            seconds: started.elapsed().as_secs_f64(),
        };
        if !args.json {
            println!(
                "{:>5}  {:<10}  {:>13}  {:>9.4}  {:>10}  {:>8}  {:>6.1}s",
                row.round,
                row.outcome.as_str(),
                row.test_accuracy
                    .map(|a| format!("{a:.3}"))
                    .unwrap_or_else(|| "-".into()),
                row.epsilon_max,
                format!(
                    "{}/{}",
                    row.participants_aggregated, row.participants_selected
                ),
                row.dropouts,
                row.seconds
            );
            if let Some(reason) = &row.reason {
                println!("       reason: {reason}");
            }
        }
        results.push(row);
    }
    children.stop_all();

    let completed = results
        .iter()
        .filter(|r| r.outcome == RoundOutcome::Completed)
        .count() as u32;
    let epsilon_max = results.iter().map(|r| r.epsilon_max).fold(0.0, f64::max);
    let summary = DemoSummary {
        dataset: dataset_name(args.dataset),
        participants: args.participants,
        rounds_requested: args.rounds,
        rounds_completed: completed,
        test_accuracy: last_accuracy,
        baseline_accuracy: baseline,
        epsilon_max,
        epsilon_target: target_epsilon,
        delta: args.delta,
        noise_multiplier: sigma,
        records_per_hospital: slices.iter().map(Vec::len).collect(),
        test_records: test_idx.len(),
        rounds: results,
        work_dir: (args.keep || args.work_dir.is_some()).then(|| work.display().to_string()),
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        println!();
        println!(
            "federated, DP (ε ≤ {:.3} per hospital, δ = {}): test accuracy {}",
            summary.epsilon_max,
            summary.delta,
            summary
                .test_accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "- (no round completed)".into())
        );
        println!(
            "centralised, non-private baseline (all records pooled, no guarantee): test accuracy {:.3}",
            summary.baseline_accuracy
        );
        if args.keep || args.work_dir.is_some() {
            println!("logs, database and models kept in {}", work.display());
        }
    }
    ensure!(
        completed > 0,
        "no round completed (see the logs in {})",
        work.display()
    );
    Ok(())
}

/// Starts `confide-coordinator serve` on an embedded SQLite file in `work` and a free loopback port, with a fresh
/// operator token; returns its URL and the token.
fn start_coordinator(
    tools: &Tools,
    work: &Path,
    children: &mut Children,
) -> Result<(String, String)> {
    let db_url = format!("sqlite:{}", work.join("coordinator.db").display());
    let token_out = Command::new(&tools.coordinator)
        .args([
            "--database-url",
            &db_url,
            "token",
            "create",
            "--name",
            "demo-operator",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running confide-coordinator token create")?;
    ensure!(
        token_out.status.success(),
        "creating the operator token: {}",
        String::from_utf8_lossy(&token_out.stderr).trim()
    );
    let operator_token = String::from_utf8_lossy(&token_out.stdout)
        .trim()
        .to_string();
    let coordinator_log = std::fs::File::create(work.join("coordinator.log"))?;
    let mut coordinator = Command::new(&tools.coordinator)
        .args([
            "--database-url",
            &db_url,
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(coordinator_log)
        .spawn()
        .context("starting confide-coordinator")?;
    let stdout = coordinator.stdout.take().context("coordinator stdout")?;
    children.0.push(("coordinator".into(), coordinator));
    let url = read_listen_url(stdout)?;
    Ok((url, operator_token))
}

fn dataset_name(d: DemoDataset) -> &'static str {
    match d {
        DemoDataset::BreastCancer => "breast-cancer",
        DemoDataset::Digits => "digits",
    }
}

/// Standardisation statistics (mean, std per feature) of `csv`, in the JSON that `--stats` reads.
fn write_stats(tools: &Tools, csv: &Path, label: &str, out: &Path) -> Result<()> {
    let status = Command::new(&tools.participant)
        .args(["stats", "--label", label])
        .arg("--data")
        .arg(csv)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running confide-participant stats")?;
    ensure!(
        status.success(),
        "computing standardisation statistics failed"
    );
    Ok(())
}

fn baseline_accuracy(
    tools: &Tools,
    train: &Path,
    test: &Path,
    model: &Path,
    p: &Preset,
    stats: &Path,
    seed: u64,
) -> Result<f64> {
    let out = Command::new(&tools.participant)
        .args(["train", "--non-private", "--json", "--label", p.label])
        .arg("--data")
        .arg(train)
        .arg("--test-data")
        .arg(test)
        .arg("--model")
        .arg(model)
        .arg("--stats")
        .arg(stats)
        .args(["--epochs", &p.baseline_epochs.to_string()])
        .args(["--sampling-rate", &p.sampling_rate.to_string()])
        .args(["--clip", &p.clip_norm.to_string()])
        .args(["--learning-rate", &p.learning_rate.to_string()])
        .args(["--momentum", &p.momentum.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running the non-private baseline")?;
    ensure!(
        out.status.success(),
        "the non-private baseline failed: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the baseline printed no JSON")?;
    v["test_accuracy"]
        .as_f64()
        .context("baseline JSON has no test_accuracy")
}

/// Reads the coordinator's "listening on http://ADDR" line.
fn read_listen_url(stdout: std::process::ChildStdout) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the coordinator never blocks on a full pipe.
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the coordinator did not start within 30 s (see coordinator.log)")?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected coordinator output {line:?}"))?;
    Ok(url.to_string())
}

fn check_children(children: &mut Children, work: &Path) -> Result<()> {
    for (name, child) in &mut children.0 {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "{name} exited ({status}); see {}",
                work.join(format!("{name}.log")).display()
            );
        }
    }
    Ok(())
}

fn stage_position(info: &RoundInfo) -> u64 {
    use confide_common::api::RoundStage::*;
    match info.stage {
        AdvertiseKeys => 0,
        ShareKeys => 1,
        MaskedInputCollection => 2,
        Unmasking => 3,
        Finished => 4,
    }
}

fn stage_message(info: &RoundInfo) -> String {
    use confide_common::api::RoundStage::*;
    let doing = match info.stage {
        AdvertiseKeys => "hospitals train locally (DP-SGD) and advertise keys",
        ShareKeys => "hospitals share Shamir shares of their mask seeds",
        MaskedInputCollection => "hospitals upload masked updates",
        Unmasking => "survivors help remove the masks",
        Finished => "finished",
    };
    format!(
        "{doing} ({} selected)",
        info.members(MemberSet::Selected).len()
    )
}
