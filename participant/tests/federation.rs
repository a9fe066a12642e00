//! The whole federation over real HTTP: an in-process coordinator (temporary SQLite database) and participant agents
//! as real `confide-participant run` child processes, each with its own slice of the breast-cancer data.
//!
//! Agents run with the debug-build test hooks: `CONFIDE_AGENT_DUMP_INPUTS=1` makes each write the quantised input
//! it masks and sends, so the published model can be checked against the exact aggregate of the inputs that made it
//! into the sum; `CONFIDE_AGENT_CRASH_AT` aborts an agent at a chosen protocol point.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use confide_common::api::{
    CreateStudyRequest, MemberSet, RoundInfo, RoundOutcome, RoundStage, StartRoundRequest,
};
use confide_common::dp::ledger::epsilon;
use confide_common::dp::{AccountantKind, PrivacyEvent};
use confide_common::model::{ModelSpec, decode_safetensors};
use confide_common::secagg::QuantizationParams;
use confide_coordinator::client::devcert::{self, DevCerts};
use confide_coordinator::client::{CoordinatorClient, TlsOptions};
use confide_coordinator::transport::{TlsFiles, tls};
use confide_coordinator::{AppState, Limits, ServeOptions, Store};
use confide_participant::agent::ledger::LEDGER_FILE;
use confide_participant::agent::state::{IDENTITY_FILE, read_identity};
use confide_participant::data::{CsvOptions, Standardization, read_csv};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/breast_cancer_wisconsin.csv"
);
/// Records in `DATA` (split into disjoint per-site slices).
const DATA_RECORDS: usize = 569;
const Q: f64 = 0.2;
const SIGMA: f64 = 1.0;
const LOCAL_EPOCHS: u32 = 1;

/// The study's public DP-SGD divisor: q × a site's records when the data is split among `sites`.
fn expected_batch(sites: usize) -> f64 {
    Q * (DATA_RECORDS / sites) as f64
}

/// An in-process coordinator serving HTTPS on a loopback port; participant routes need a client certificate of the
/// test's CA (mTLS), as in the demo.
struct Coordinator {
    addr: SocketAddr,
    certs: DevCerts,
    db_url: String,
    store: Store,
    state: AppState,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Coordinator {
    /// Starts on `port` (0 = any free one) against the SQLite database at `db_url`, with `certs`.
    async fn start(db_url: &str, port: u16, certs: DevCerts) -> Self {
        let store = Store::connect(db_url, None).await.expect("open store");
        let limits = Limits {
            max_poll: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(2),
            ..Limits::default()
        };
        let state = confide_coordinator::start(store.clone(), limits)
            .await
            .expect("start coordinator");
        // The old listener of a restarted coordinator may take a moment to release the port.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let (config, _reload) = tls::server_config(&TlsFiles {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: Some(certs.ca_cert.clone()),
        })
        .expect("TLS configuration");
        let options = ServeOptions {
            tls: Some((config, true)),
            ..ServeOptions::default()
        };
        let server = tokio::spawn(confide_coordinator::serve_with(
            listener,
            state.clone(),
            options,
            async move { stopped.cancelled().await },
        ));
        Self {
            addr,
            certs,
            db_url: db_url.to_string(),
            store,
            state,
            stop,
            server,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// What a client (operator or agent) needs to connect.
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: Some(self.certs.ca_cert.clone()),
            client_cert: Some(self.certs.client_cert.clone()),
            client_key: Some(self.certs.client_key.clone()),
            allow_insecure_http: false,
        }
    }

    /// Graceful stop: the API closes, the round drivers stop and release their leases.
    async fn stop(self) {
        self.stop.cancel();
        self.state.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.store.close().await;
    }
}

/// A participant agent child process.
struct AgentProc {
    name: String,
    study: i64,
    child: Child,
    state_dir: PathBuf,
    ledger: PathBuf,
    log: PathBuf,
}

impl AgentProc {
    fn participant_id(&self) -> Option<i64> {
        read_identity(&self.state_dir)
            .ok()
            .flatten()
            .map(|i| i.participant_id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The quantised input this agent sent in a round (debug hook).
    fn sent_input(&self, round_id: i64) -> Option<Vec<u32>> {
        let text =
            std::fs::read_to_string(self.state_dir.join(format!("debug-input-{round_id}.json")))
                .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        serde_json::from_value(v["input"].clone()).ok()
    }

    /// SIGTERM, then the exit status (killed after 30 s).
    fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `budget --json` of the agent's ledger: `{"datasets": [..], "studies": [..]}`.
    fn budget_json(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
            .args(["budget", "--json", "--ledger"])
            .arg(&self.ledger)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "budget: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's world: temp dir, coordinator, operator client, study, agents.
struct Federation {
    dir: tempfile::TempDir,
    coordinator: Option<Coordinator>,
    op_token: String,
    study: i64,
    agents: Vec<AgentProc>,
    stats: PathBuf,
}

/// A study for `sites` agents, each with a 1/`sites` slice of the data.
fn study_request(
    name: &str,
    sites: usize,
    rounds: u32,
    threshold: u32,
    deadlines: [u64; 4],
) -> CreateStudyRequest {
    let expected_batch = expected_batch(sites);
    serde_json::from_value(json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 30, "num_classes": 2},
        "initial_weights_seed": 3,
        "dp": {"sampling_rate": Q, "noise_multiplier": SIGMA, "local_epochs": LOCAL_EPOCHS, "clip_norm": 1.0, "expected_batch_size": expected_batch},
        // Malicious-model secure aggregation (the default) tolerating no colluding site, so that t may be a bare
        // majority and the dropout tests keep t survivors.
        "secagg": {"threat_model": "malicious", "corrupt_fraction": 0.0, "threshold": threshold, "graph": {"kind": "complete"},
                   "quantisation": {"clip_range": 4.0, "bits": 32, "max_weight": 1000}},
        "budget": {"epsilon": 100.0, "delta": 1e-5},
        "rounds": rounds,
        "min_participants": threshold.max(3),
        "deadlines": {"advertise_keys_secs": deadlines[0], "share_keys_secs": deadlines[1],
                      "masked_input_secs": deadlines[2], "unmasking_secs": deadlines[3]},
        "server_optimizer": {"kind": "fed_avg", "learning_rate": 1.0},
        "local_training": {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9}
    }))
    .expect("study request")
}

/// ε (PLD, δ = 1e-5) of `rounds` rounds of the test studies' DP-SGD, charged one round at a time as the ledgers
/// store them.
fn epsilon_of_rounds(rounds: usize) -> f64 {
    let steps = (f64::from(LOCAL_EPOCHS) / Q).ceil() as u64;
    let round = PrivacyEvent::SubsampledGaussian {
        sampling_rate: Q,
        noise_multiplier: SIGMA,
        steps,
    };
    epsilon(&vec![round; rounds], 1e-5, AccountantKind::Pld).unwrap()
}

/// Options of one agent.
#[derive(Default, Clone)]
struct AgentOpts {
    epsilon: Option<f64>,
    crash_at: Option<&'static str>,
    /// State directory (default: `site-<k>/state-<study>`).
    state_dir: Option<PathBuf>,
    /// Ledger file (default: in the state directory).
    ledger: Option<PathBuf>,
}

impl Federation {
    async fn new(name: &str, study: CreateStudyRequest) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite:{}", dir.path().join("coordinator.db").display());
        let certs = devcert::generate(dir.path(), &["127.0.0.1".into()]).expect("certificates");
        let coordinator = Coordinator::start(&db_url, 0, certs).await;
        let op_token = coordinator
            .store
            .create_operator_token(&format!("op-{name}"))
            .await
            .unwrap();
        let op = CoordinatorClient::connect(&coordinator.url(), &op_token, &coordinator.tls())
            .expect("operator client");
        let study = op.create_study(&study).await.expect("create study").id;
        // Standardisation statistics fixed in advance and shared by every site (here: of the whole public file).
        let all = read_csv(
            Path::new(DATA),
            &CsvOptions {
                label: "malignant".into(),
                features: None,
                num_classes: 2,
            },
        )
        .unwrap();
        let stats = dir.path().join("stats.json");
        std::fs::write(
            &stats,
            serde_json::to_string(&Standardization::compute(&all)).unwrap(),
        )
        .unwrap();
        Self {
            dir,
            coordinator: Some(coordinator),
            op_token,
            study,
            agents: Vec::new(),
            stats,
        }
    }

    fn coordinator(&self) -> &Coordinator {
        self.coordinator.as_ref().expect("coordinator running")
    }

    fn op(&self) -> CoordinatorClient {
        CoordinatorClient::connect(
            &self.coordinator().url(),
            &self.op_token,
            &self.coordinator().tls(),
        )
        .expect("operator client")
    }

    /// Writes `n` disjoint slices of the data set and starts one agent per slice in the current study, each with a
    /// fresh enrolment token. Site k's slice (and dataset id `site-k-records`) is the same in every study.
    async fn spawn_agents(&mut self, opts: &[AgentOpts]) {
        let text = std::fs::read_to_string(DATA).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), DATA_RECORDS);
        let n = opts.len();
        let study = self.study;
        for (k, o) in opts.iter().enumerate() {
            let name = format!("site-{k}");
            let site = self.dir.path().join(&name);
            std::fs::create_dir_all(&site).unwrap();
            let mut csv = format!("{header}\n");
            for r in rows.iter().skip(k).step_by(n) {
                csv.push_str(r);
                csv.push('\n');
            }
            let data = site.join("data.csv");
            std::fs::write(&data, csv).unwrap();
            let token = self
                .op()
                .create_enrolment_token(
                    study,
                    &confide_common::api::CreateEnrolmentTokenRequest {
                        label: name.clone(),
                        expires_in_secs: None,
                    },
                )
                .await
                .unwrap()
                .token;
            let state_dir = o
                .state_dir
                .clone()
                .unwrap_or_else(|| site.join(format!("state-{study}")));
            let ledger = o
                .ledger
                .clone()
                .unwrap_or_else(|| state_dir.join(LEDGER_FILE));
            let log = site.join(format!("agent-{study}.log"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_confide-participant"));
            let tls = self.coordinator().tls();
            cmd.arg("run")
                .args(["--coordinator-url", &self.coordinator().url()])
                .arg("--ca-cert")
                .arg(tls.ca_cert.as_ref().expect("CA"))
                .arg("--client-cert")
                .arg(tls.client_cert.as_ref().expect("client certificate"))
                .arg("--client-key")
                .arg(tls.client_key.as_ref().expect("client key"))
                .arg("--state-dir")
                .arg(&state_dir)
                .args(["--name", &name, "--label", "malignant"])
                .args(["--dataset-id", &format!("{name}-records")])
                .arg("--data")
                .arg(&data)
                .arg("--ledger")
                .arg(&ledger)
                .arg("--stats")
                .arg(&self.stats)
                .args(["--epsilon", &o.epsilon.unwrap_or(50.0).to_string()])
                .args([
                    "--delta",
                    "1e-5",
                    "--poll-wait-secs",
                    "2",
                    "--max-backoff-secs",
                    "1",
                    // Three-site federations: every other site.
                    "--min-cohort",
                    "2",
                ])
                .env("CONFIDE_ENROLMENT_TOKEN", token)
                .env("CONFIDE_AGENT_DUMP_INPUTS", "1")
                .env("RUST_LOG", "info")
                .env_remove("CONFIDE_CONFIG")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap(),
                );
            if let Some(point) = o.crash_at {
                cmd.env("CONFIDE_AGENT_CRASH_AT", point);
            }
            let child = cmd.spawn().expect("spawn agent");
            self.agents.push(AgentProc {
                name,
                study,
                child,
                state_dir,
                ledger,
                log,
            });
        }
        let want = self.agents.iter().filter(|a| a.study == study).count();
        // Enrolled at the coordinator and the identity stored by the agent (written just after the answer).
        self.wait("every agent to enrol", 60, async |f| {
            f.agents
                .iter()
                .filter(|a| a.study == study)
                .all(|a| a.participant_id().is_some())
                && f.op()
                    .list_participants(study)
                    .await
                    .map(|p| p.len())
                    .unwrap_or(0)
                    == want
        })
        .await;
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("---- {} (study {}) ----\n{}", a.name, a.study, a.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `done` every 100 ms; panics with every agent's log after `secs`.
    async fn wait(&self, what: &str, secs: u64, mut done: impl AsyncFnMut(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if done(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}\n{}", self.logs());
    }

    async fn start_round(&self) -> i64 {
        self.op()
            .start_round(self.study, &StartRoundRequest::default())
            .await
            .expect("start round")
            .id
    }

    /// Waits until the round finishes and asserts it completed.
    async fn finished(&self, round: i64, secs: u64) -> RoundInfo {
        self.wait(
            "the round to finish",
            secs,
            async |f| matches!(f.op().get_round(round).await, Ok(r) if r.outcome.is_some()),
        )
        .await;
        let info = self.op().get_round(round).await.unwrap();
        assert_eq!(
            info.outcome,
            Some(RoundOutcome::Completed),
            "round {round}: {:?}\n{}",
            info.reason,
            self.logs()
        );
        info
    }

    fn agent_of(&self, participant: i64) -> &AgentProc {
        self.agents
            .iter()
            .find(|a| a.participant_id() == Some(participant))
            .expect("agent of participant")
    }

    /// Checks that the model the round published is its base plus the plain mean of exactly the inputs in the
    /// aggregate (U3), computed from what the agents sent; returns the participants in the aggregate.
    async fn check_published_model(&self, info: &RoundInfo) -> Vec<i64> {
        let op = self.op();
        let in_sum = info.members(MemberSet::SentMaskedInput).to_vec();
        assert!(!in_sum.is_empty(), "U3 recorded: {info:?}");
        let versions = op.list_model_versions(self.study).await.unwrap();
        let published = versions
            .iter()
            .find(|v| v.round_id == Some(info.id))
            .expect("a model published by the round");
        let base = op
            .download_model_version(self.study, info.base_version)
            .await
            .unwrap();
        let new = op
            .download_model_version(self.study, published.version)
            .await
            .unwrap();
        let spec: ModelSpec = serde_json::from_value(json!(
            {"kind": "logistic_regression", "input_dim": 30, "num_classes": 2}
        ))
        .unwrap();
        let base = decode_safetensors(&spec, &base.bytes).unwrap();
        let new = decode_safetensors(&spec, &new.bytes).unwrap();
        // The quantisation the round used, as the agents saw it (bits 32, n = selected participants).
        let selected = info.members(MemberSet::Selected).len() as u32;
        let q = QuantizationParams::for_participants(4.0, 32, selected, 1000).unwrap();
        let mut sum = vec![0u32; base.len() + 1];
        for p in &in_sum {
            let input = self
                .agent_of(*p)
                .sent_input(info.id)
                .unwrap_or_else(|| panic!("participant {p} sent no input in round {}", info.id));
            assert_eq!(input.len(), sum.len());
            assert_eq!(*input.last().unwrap(), 1, "every site has weight 1");
            for (s, v) in sum.iter_mut().zip(&input) {
                *s = s.wrapping_add(*v);
            }
        }
        let d = q.dequantize(&sum).unwrap();
        assert_eq!(d.total_weight, in_sum.len() as u64);
        let mut moved = 0.0f64;
        for ((b, n), v) in base.iter().zip(&new).zip(&d.values) {
            let expected = (f64::from(*b) + v / d.total_weight as f64) as f32;
            assert!(
                (expected - n).abs() <= 1e-6 * expected.abs().max(1.0),
                "published {n}, expected {expected}"
            );
            moved += f64::from(n - b).abs();
        }
        assert!(moved > 0.0, "the round moved the model");
        in_sum
    }

    async fn restart_coordinator(&mut self) {
        let old = self.coordinator.take().unwrap();
        let (db, port, certs) = (old.db_url.clone(), old.addr.port(), old.certs.clone());
        old.stop().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.coordinator = Some(Coordinator::start(&db, port, certs).await);
    }

    async fn shutdown(mut self) {
        if std::env::var_os("CONFIDE_TEST_SHOW_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
        for a in &mut self.agents {
            if a.child.try_wait().unwrap().is_none() {
                let status = a.terminate();
                assert!(
                    status.success(),
                    "{} exited with {status} on SIGTERM\n{}",
                    a.name,
                    a.log_text()
                );
            }
        }
        if let Some(c) = self.coordinator.take() {
            c.stop().await;
        }
    }
}

/// (i) Five agents complete three rounds; each published model is its base plus the plain FedAvg of the five
/// (noised, quantised) updates; both ledgers charge every agent three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agents_three_rounds_publish_fedavg() {
    let mut f = Federation::new("five", study_request("five", 5, 3, 3, [60, 30, 30, 30])).await;
    f.spawn_agents(&vec![AgentOpts::default(); 5]).await;
    for _ in 0..3 {
        let round = f.start_round().await;
        let info = f.finished(round, 90).await;
        assert_eq!(f.check_published_model(&info).await.len(), 5);
        // The malicious-model stages ran: every site acknowledged its shares and signed U3.
        assert_eq!(info.members(MemberSet::VerifiedShares).len(), 5, "{info:?}");
        assert_eq!(
            info.members(MemberSet::SignedSurvivors).len(),
            5,
            "{info:?}"
        );
    }
    // The operator sees each site's identity fingerprint, the one the agent prints.
    let listed = f.op().list_participants(f.study).await.unwrap();
    for a in &f.agents {
        let out = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
            .arg("identity")
            .arg("--state-dir")
            .arg(&a.state_dir)
            .output()
            .unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        let id = a.participant_id().unwrap();
        let p = listed.iter().find(|p| p.id == id).unwrap();
        assert_eq!(p.identity_fingerprint.as_deref(), Some(printed.trim()));
        let seed = hex::encode(std::fs::read(a.state_dir.join("identity.key")).unwrap());
        assert!(
            !a.log_text().contains(&seed),
            "the identity key is never logged"
        );
    }
    let report = f.op().privacy_report(f.study).await.unwrap();
    // One ε path: the coordinator's report, every agent's ledger, R events of T steps and one event of R·T steps
    // give the same number, bit for bit.
    let expected = epsilon_of_rounds(3);
    let merged = epsilon(
        &[PrivacyEvent::SubsampledGaussian {
            sampling_rate: Q,
            noise_multiplier: SIGMA,
            steps: 3 * (f64::from(LOCAL_EPOCHS) / Q).ceil() as u64,
        }],
        1e-5,
        AccountantKind::Pld,
    )
    .unwrap();
    assert_eq!(expected.to_bits(), merged.to_bits());
    for p in &report.participants {
        assert_eq!(p.rounds_charged, 3);
        assert_eq!(p.epsilon_spent.to_bits(), expected.to_bits(), "{report:?}");
    }
    for a in &f.agents {
        let b = a.budget_json();
        let dataset = &b["datasets"][0];
        assert_eq!(dataset["dataset_id"], format!("{}-records", a.name), "{b}");
        assert_eq!(dataset["rounds_charged"], 3, "{b}");
        assert_eq!(b["studies"][0]["study_id"], f.study, "{b}");
        let spent = dataset["epsilon_spent"].as_f64().unwrap();
        assert_eq!(
            spent.to_bits(),
            expected.to_bits(),
            "local ε {spent}, expected {expected}"
        );
        assert!(
            !a.log_text().contains("credential\":"),
            "no secrets in logs"
        );
    }
    f.shutdown().await;
}

/// (ii) One agent dies after ShareKeys (before its masked input), another during Unmasking: the round completes
/// with exactly the aggregate of the four whose masked inputs arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_after_share_keys_and_during_unmasking() {
    let mut f = Federation::new("drops", study_request("drops", 5, 1, 3, [60, 30, 6, 6])).await;
    let mut opts = vec![AgentOpts::default(); 5];
    opts[0].crash_at = Some("after_share_keys");
    opts[1].crash_at = Some("before_unmasking_response");
    f.spawn_agents(&opts).await;
    let crashed_early = f.agents[0].participant_id().unwrap();
    let crashed_late = f.agents[1].participant_id().unwrap();
    let round = f.start_round().await;
    let info = f.finished(round, 90).await;
    let in_sum = f.check_published_model(&info).await;
    assert_eq!(in_sum.len(), 4);
    assert!(!in_sum.contains(&crashed_early));
    assert!(
        in_sum.contains(&crashed_late),
        "its masked input is in the sum"
    );
    let unmasked = info.members(MemberSet::Unmasked);
    assert_eq!(unmasked.len(), 3);
    assert!(!unmasked.contains(&crashed_late));
    for a in &mut f.agents[..2] {
        let status = a.child.wait().unwrap();
        assert!(!status.success(), "{} should have aborted", a.name);
    }
    // The coordinator charges exactly the inputs in the aggregate.
    let report = f.op().privacy_report(f.study).await.unwrap();
    for p in &report.participants {
        let charged = i64::from(in_sum.contains(&p.participant_id));
        assert_eq!(
            p.rounds_charged, charged,
            "participant {}",
            p.participant_id
        );
    }
    f.shutdown().await;
}

/// (iii) An agent whose local budget allows one round but not two declines the second; the coordinator shows why,
/// does not wait for the AdvertiseKeys deadline (120 s), and the round completes without it (three remain, the
/// coordinator's minimum aggregate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_local_budget_declines_and_the_round_goes_on() {
    let mut f = Federation::new(
        "budget",
        study_request("budget", 4, 2, 3, [120, 30, 30, 30]),
    )
    .await;
    let one = epsilon_of_rounds(1);
    let two = epsilon_of_rounds(2);
    let mut opts = vec![AgentOpts::default(); 4];
    opts[3].epsilon = Some((one + two) / 2.0);
    f.spawn_agents(&opts).await;
    let frugal = f.agents[3].participant_id().unwrap();

    let first = f.start_round().await;
    let info = f.finished(first, 60).await;
    assert_eq!(f.check_published_model(&info).await.len(), 4);

    let second = f.start_round().await;
    let info = f.finished(second, 60).await;
    let in_sum = f.check_published_model(&info).await;
    assert_eq!(in_sum.len(), 3);
    assert!(!in_sum.contains(&frugal));
    let excluded = info
        .excluded
        .iter()
        .find(|e| e.participant_id == frugal)
        .expect("the declining agent is listed as excluded");
    assert!(
        excluded
            .reason
            .starts_with("declined: local privacy budget"),
        "{}",
        excluded.reason
    );
    let b = f.agents[3].budget_json();
    assert_eq!(b["datasets"][0]["rounds_charged"], 1, "{b}");
    assert!(b["datasets"][0]["epsilon_spent"].as_f64().unwrap() <= (one + two) / 2.0);
    assert_eq!(
        f.agents[0].budget_json()["datasets"][0]["rounds_charged"],
        2
    );
    let report = f.op().privacy_report(f.study).await.unwrap();
    let frugal_report = report
        .participants
        .iter()
        .find(|p| p.participant_id == frugal)
        .unwrap();
    assert_eq!(frugal_report.rounds_charged, 1);
    // The rest of the operator client against the real API.
    let op = f.op();
    assert_eq!(op.list_rounds(f.study).await.unwrap().len(), 2);
    assert!(
        op.list_studies()
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == f.study)
    );
    let e = op.abort_round(second, "too late").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("already finished"), "{e}");
    assert!(!e.is_transient());
    f.shutdown().await;
}

/// (iv) The coordinator is stopped mid-round and a new one started on the same port and database, twice: while the
/// agents train and advertise keys, and again once keys are exchanged (secrets only in the agents' memory). The
/// agents ride it out (retrying, re-sending what failed to upload) and the study completes both its rounds with
/// exact aggregates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_survive_a_coordinator_restart_mid_round() {
    let mut f = Federation::new(
        "restart",
        study_request("restart", 3, 2, 2, [60, 60, 60, 60]),
    )
    .await;
    f.spawn_agents(&vec![AgentOpts::default(); 3]).await;
    let first = f.start_round().await;
    f.restart_coordinator().await;
    // Catch the round between the key exchange and its end (masking waits for each agent's ledger charge).
    let until = Instant::now() + Duration::from_secs(60);
    let stage = loop {
        let r = f.coordinator().store.get_round(first).await.unwrap();
        if r.stage == RoundStage::ShareKeys
            || r.stage == RoundStage::MaskedInputCollection
            || r.outcome.is_some()
        {
            break r.stage;
        }
        assert!(
            Instant::now() < until,
            "round stuck in {}\n{}",
            r.stage.as_str(),
            f.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(
        stage,
        RoundStage::Finished,
        "the round ended before the second restart"
    );
    f.restart_coordinator().await;
    let info = f.finished(first, 90).await;
    let logs = f.logs();
    assert!(
        logs.contains("backing off") || logs.contains("will re-send"),
        "the agents saw the coordinator go away\n{logs}"
    );
    assert_eq!(f.check_published_model(&info).await.len(), 3);
    let second = f.start_round().await;
    let info = f.finished(second, 60).await;
    assert_eq!(f.check_published_model(&info).await.len(), 3);
    let study = f.op().get_study(f.study).await.unwrap();
    assert_eq!(study.rounds_completed, 2);
    let mut per_agent = BTreeMap::new();
    for a in &f.agents {
        per_agent.insert(
            a.name.clone(),
            a.budget_json()["datasets"][0]["rounds_charged"].clone(),
        );
    }
    assert!(per_agent.values().all(|v| v == 2), "{per_agent:?}");
    f.shutdown().await;
}

/// (v) The budget belongs to the dataset, not to the study or the enrolment. Four sites spend one round in study A.
/// Then study B is created on the same data: three sites join it with a second agent each (study A's agents keep
/// running) that shares the dataset's ledger file; the fourth, whose budget allows one round, re-enrols in B the way
/// the agent's own error message suggests (identity.json moved away, new token). B's first round starts from what
/// A spent: the fourth site declines it, and the three others complete it, charged to the same datasets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_study_on_the_same_data_starts_from_what_is_spent() {
    let mut f = Federation::new(
        "study-a",
        study_request("study-a", 4, 1, 3, [120, 30, 30, 30]),
    )
    .await;
    let one = epsilon_of_rounds(1);
    let two = epsilon_of_rounds(2);
    let mut opts = vec![AgentOpts::default(); 4];
    opts[3].epsilon = Some((one + two) / 2.0);
    f.spawn_agents(&opts).await;
    let study_a = f.study;
    let round = f.start_round().await;
    let info = f.finished(round, 60).await;
    assert_eq!(f.check_published_model(&info).await.len(), 4);

    // The fourth site stops and moves its identity away to enrol anew; its ledger stays where it was.
    let mut frugal_a = f.agents.remove(3);
    assert!(frugal_a.terminate().success());
    let frugal_state = frugal_a.state_dir.clone();
    std::fs::rename(
        frugal_state.join(IDENTITY_FILE),
        frugal_state.join("identity-study-a.json"),
    )
    .unwrap();

    let study_b = f
        .op()
        .create_study(&study_request("study-b", 4, 1, 3, [120, 30, 30, 30]))
        .await
        .expect("create study B")
        .id;
    f.study = study_b;
    let mut opts: Vec<AgentOpts> = f.agents[..3]
        .iter()
        .map(|a| AgentOpts {
            ledger: Some(a.ledger.clone()),
            ..AgentOpts::default()
        })
        .collect();
    opts.push(AgentOpts {
        epsilon: Some((one + two) / 2.0),
        state_dir: Some(frugal_state),
        ..AgentOpts::default()
    });
    f.spawn_agents(&opts).await;
    let frugal_b = f.agents.last().unwrap().participant_id().unwrap();

    let round = f.start_round().await;
    let info = f.finished(round, 60).await;
    let in_sum = f.check_published_model(&info).await;
    assert_eq!(in_sum.len(), 3);
    assert!(!in_sum.contains(&frugal_b));
    let excluded = info
        .excluded
        .iter()
        .find(|e| e.participant_id == frugal_b)
        .expect("the re-enrolled site declined");
    assert!(
        excluded
            .reason
            .starts_with("declined: local privacy budget"),
        "{}",
        excluded.reason
    );
    // Its one dataset: one round spent (in A), nothing in B.
    let b = f.agents.last().unwrap().budget_json();
    assert_eq!(b["datasets"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["datasets"][0]["dataset_id"], "site-3-records", "{b}");
    assert_eq!(b["datasets"][0]["rounds_charged"], 1, "{b}");
    assert_eq!(b["studies"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["studies"][0]["study_id"], study_a, "{b}");
    // The others: one ledger per dataset holding both studies, ε of both rounds together.
    for a in f.agents.iter().filter(|a| a.study == study_b).take(3) {
        let b = a.budget_json();
        let dataset = &b["datasets"][0];
        assert_eq!(dataset["rounds_charged"], 2, "{b}");
        assert_eq!(dataset["studies"], 2, "{b}");
        let spent = dataset["epsilon_spent"].as_f64().unwrap();
        assert_eq!(spent, two, "{b}");
        let studies: Vec<i64> = b["studies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["study_id"].as_i64().unwrap())
            .collect();
        assert_eq!(studies, [study_a, study_b], "{b}");
    }
    f.shutdown().await;
}
