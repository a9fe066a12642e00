//! The demo's processes: finding the binaries, the coordinator and the hospitals' agents as children (stopped on
//! every exit path), and the one-shot `confide-participant` commands (statistics, baseline, evaluation).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use confide_client::TlsOptions;
use confide_client::devcert;

use super::presets::Preset;

/// Child processes, killed on every exit path (SIGTERM first, so agents finish a durable write).
pub struct Children(Vec<(String, Child)>);

impl Children {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, name: String, child: Child) {
        self.0.push((name, child));
    }

    pub fn stop_all(&mut self) {
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
pub(crate) fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    }
}

pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

pub fn find_binary(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} not found; build the workspace first (`cargo build --release --workspace`, which scripts/demo.sh does) \
         or point --bin-dir at the folder holding it",
        path.display()
    );
    Ok(path)
}

/// The two binaries the demo runs.
pub struct Tools {
    pub coordinator: PathBuf,
    pub participant: PathBuf,
}

impl Tools {
    /// Runs `confide-participant evaluate` on a model file and the test set; returns the accuracy.
    pub fn evaluate(&self, model: &Path, test: &Path, label: &str, stats: &Path) -> Result<f64> {
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

    /// Standardisation statistics (mean, std per feature) of `csv`, in the JSON that `--stats` reads.
    pub fn write_stats(&self, csv: &Path, label: &str, out: &Path) -> Result<()> {
        let status = Command::new(&self.participant)
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

    /// Test accuracy of the centralised non-private baseline trained on `train`.
    pub fn baseline_accuracy(
        &self,
        train: &Path,
        test: &Path,
        model: &Path,
        p: &Preset,
        stats: &Path,
        seed: u64,
    ) -> Result<f64> {
        let out = Command::new(&self.participant)
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
}

/// One hospital's agent: who it is, where its records are and what its dataset may spend.
pub struct Agent<'a> {
    pub coordinator_url: &'a str,
    /// The CA to trust, the client certificate to show.
    pub tls: &'a TlsOptions,
    pub name: &'a str,
    pub dataset_id: String,
    pub label: &'a str,
    /// A statistics file for `--stats`; None: the agent scales by the study's public feature ranges.
    pub stats: Option<&'a Path>,
    pub epsilon: f64,
    pub delta: f64,
    pub enrolment_token: &'a str,
    /// The fewest other hospitals a round must have for this one to take part (`--min-cohort`).
    pub min_cohort: u32,
}

impl Tools {
    /// Starts `confide-participant run` for `agent`, with its state in `work/<name>`, its records in
    /// `work/<name>.csv` and its log in `work/<name>.log`.
    pub fn spawn_agent(&self, agent: &Agent<'_>, work: &Path) -> Result<Child> {
        let state_dir = work.join(agent.name);
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let log = std::fs::File::create(work.join(format!("{}.log", agent.name)))?;
        let mut cmd = Command::new(&self.participant);
        cmd.arg("run");
        let tls = agent.tls;
        for (flag, path) in [
            ("--ca-cert", &tls.ca_cert),
            ("--client-cert", &tls.client_cert),
            ("--client-key", &tls.client_key),
        ] {
            if let Some(p) = path {
                cmd.arg(flag).arg(p);
            }
        }
        if tls.allow_insecure_http {
            cmd.arg("--allow-insecure-http");
        }
        if let Some(stats) = agent.stats {
            cmd.arg("--stats").arg(stats);
        }
        cmd.arg("--coordinator-url")
            .arg(agent.coordinator_url)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--name")
            .arg(agent.name)
            .arg("--dataset-id")
            .arg(&agent.dataset_id)
            .arg("--data")
            .arg(work.join(format!("{}.csv", agent.name)))
            .arg("--label")
            .arg(agent.label)
            .arg("--epsilon")
            .arg(agent.epsilon.to_string())
            .arg("--delta")
            .arg(agent.delta.to_string())
            .arg("--min-cohort")
            .arg(agent.min_cohort.to_string())
            .env("CONFIDE_ENROLMENT_TOKEN", agent.enrolment_token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the agent of {}", agent.name))
    }
}

/// Starts `confide-coordinator serve` on an embedded SQLite file in `work` and a free loopback port, with a fresh
/// operator token, over HTTPS: a throw-away CA made here (`work/tls/`) signs the coordinator's certificate (for
/// 127.0.0.1 and localhost) and a client certificate, which participant routes require (mTLS). Returns its URL,
/// the token and what clients need to connect. Without `tls` (benchmarks only) it serves plain loopback HTTP.
pub fn start_coordinator(
    tools: &Tools,
    work: &Path,
    children: &mut Children,
    tls: bool,
) -> Result<(String, String, TlsOptions)> {
    let tls_dir = work.join("tls");
    std::fs::create_dir_all(&tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    let certs = devcert::generate(&tls_dir, &["127.0.0.1".into(), "localhost".into()])
        .context("making the demo's certificates")?;
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
    let mut cmd = Command::new(&tools.coordinator);
    cmd.args([
        "--database-url",
        &db_url,
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    if tls {
        cmd.arg("--tls-cert")
            .arg(&certs.server_cert)
            .arg("--tls-key")
            .arg(&certs.server_key)
            .arg("--client-ca")
            .arg(&certs.ca_cert);
    }
    let mut coordinator = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(coordinator_log)
        .spawn()
        .context("starting confide-coordinator")?;
    let stdout = coordinator.stdout.take().context("coordinator stdout")?;
    children.push("coordinator".into(), coordinator);
    let url = read_listen_url(stdout)?;
    let options = TlsOptions {
        ca_cert: Some(certs.ca_cert),
        client_cert: Some(certs.client_cert),
        client_key: Some(certs.client_key),
        allow_insecure_http: false,
    };
    Ok((url, operator_token, options))
}

/// Reads the coordinator's "listening on https://ADDR" line.
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

/// Fails if a child has exited, naming its log.
pub fn check_children(children: &mut Children, work: &Path) -> Result<()> {
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
