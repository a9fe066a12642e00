//! The real `confide-participant` agent against a lying coordinator: a small axum server in this test speaks the
//! participant API, plays three honest peers with the sans-IO secure-aggregation clients (routing through a real
//! `SecAggServer`), and lies where a malicious coordinator would. The agent must refuse before it reveals anything
//! that would unmask its update, say why in its log, decline rounds it does not accept with the reason, and be
//! charged only for the round whose masked input it actually sent.
//!
//! Lies, in order, to one agent process:
//! 1. a survivor set U3 of 2 < t = 3 at the consistency check (to unmask a sum of too few inputs) — the agent
//!    signs nothing, and when three peers' valid signatures over another U3 arrive it still reveals nothing;
//! 2. a round that swaps a pinned peer's identity key — declined with the reason, nothing trained or sent;
//! 3. a round of two other sites (below its minimum cohort of 3) — declined with the reason;
//! 4. a key directory with a peer's advertised key substituted — the agent refuses to deal any shares;
//! 5. split views: the agent signs U3 while the peers sign another U3' — with t signatures that are not over the
//!    U3 it signed, the agent reveals nothing.
//!
//! And an agent that lists its accepted peers (`--accepted-peers`) declines a round holding an identity it did not
//! list (a sybil the coordinator enrolled), and takes part in one of listed peers only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confide_common::api::{
    DeclineRoundRequest, DpParams, EnrolRequest, EnrolResponse, GraphParams, LocalTraining,
    QuantisationConfig, RoundPurpose, RoundStage, RoundTask, SecAggConfig, TaskResponse,
};
use confide_common::model::{ModelSpec, encode_safetensors};
use confide_common::plan::planned_events;
use confide_common::secagg::messages::{ControlMessage, SurvivorSignature, WIRE_VERSION};
use confide_common::secagg::{
    ConsistencyCheckRequest, GraphKind, IdentityKey, IdentityPublicKey, QuantizationParams, Roster,
    SecAggClient, SecAggParams, SecAggServer, SignedSurvivors, ThreatModel,
};
use confide_participant::data::{CsvOptions, Standardization, read_csv};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/breast_cancer_wisconsin.csv"
);
/// The agent's participant id at the fake coordinator; the peers are 2, 3, 4.
const AGENT_ID: i64 = 1;

/// What the fake coordinator knows and what the agent sent it.
#[derive(Default)]
struct Fake {
    agent_key: Option<IdentityPublicKey>,
    model: Vec<u8>,
    task: Option<RoundTask>,
    /// (round id, stage) → body.
    messages: HashMap<(i64, RoundStage), Vec<u8>>,
    /// (round id, stage) → JSON broadcast for the agent.
    broadcasts: HashMap<(i64, RoundStage), String>,
    declines: HashMap<i64, String>,
}

type Shared = Arc<Mutex<Fake>>;

fn stage_of(s: &str) -> Option<RoundStage> {
    RoundStage::parse(s)
}

async fn enrol(State(f): State<Shared>, body: Bytes) -> Response {
    let req: EnrolRequest = serde_json::from_slice(&body).expect("enrol request");
    f.lock().unwrap().agent_key = req.identity_key;
    let resp = EnrolResponse {
        participant_id: AGENT_ID,
        study_id: 1,
        credential: "test-credential".into(),
    };
    (StatusCode::CREATED, axum::Json(resp)).into_response()
}

async fn task(State(f): State<Shared>) -> axum::Json<TaskResponse> {
    let current = {
        let f = f.lock().unwrap();
        f.task.clone().and_then(|mut t| {
            if f.declines.contains_key(&t.round_id) {
                return None;
            }
            t.submitted = f.messages.contains_key(&(t.round_id, t.stage));
            Some(t)
        })
    };
    // Nothing new for the agent: answer after a pause, as a long-poll would.
    if current.as_ref().is_none_or(|t| t.submitted) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    axum::Json(match current {
        Some(t) => TaskResponse::Round(Box::new(t)),
        None => TaskResponse::Idle,
    })
}

async fn model(State(f): State<Shared>) -> Response {
    let bytes = f.lock().unwrap().model.clone();
    let sha = hex::encode(Sha256::digest(&bytes));
    (
        [
            ("content-type", "application/octet-stream".to_string()),
            ("x-confide-sha256", sha),
        ],
        bytes,
    )
        .into_response()
}

async fn message(
    State(f): State<Shared>,
    UrlPath((round, stage)): UrlPath<(i64, String)>,
    body: Bytes,
) -> StatusCode {
    let stage = stage_of(&stage).expect("a stage");
    f.lock()
        .unwrap()
        .messages
        .insert((round, stage), body.to_vec());
    StatusCode::ACCEPTED
}

async fn broadcast(
    State(f): State<Shared>,
    UrlPath((round, stage)): UrlPath<(i64, String)>,
) -> Response {
    let stage = stage_of(&stage).expect("a stage");
    match f.lock().unwrap().broadcasts.get(&(round, stage)) {
        Some(json) => ([("content-type", "application/json")], json.clone()).into_response(),
        None => (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": "no broadcast yet"})),
        )
            .into_response(),
    }
}

async fn decline(State(f): State<Shared>, UrlPath(round): UrlPath<i64>, body: Bytes) -> StatusCode {
    let req: DeclineRoundRequest = serde_json::from_slice(&body).expect("decline request");
    f.lock().unwrap().declines.insert(round, req.reason);
    StatusCode::ACCEPTED
}

/// The test's world: the fake coordinator, the agent process, three peers' identities.
struct World {
    fake: Shared,
    agent: Child,
    log: PathBuf,
    ledger: PathBuf,
    peers: Vec<IdentityKey>,
    spec: ModelSpec,
    rng: ChaCha20Rng,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl World {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The identities of the agent's four would-be peers, as every world generates them (seeded), before it starts.
    fn peer_keys() -> Vec<IdentityKey> {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        (0..4).map(|_| IdentityKey::generate(&mut rng)).collect()
    }

    /// A world whose agent runs with `extra` arguments.
    async fn start_with(extra: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec: ModelSpec = serde_json::from_value(
            serde_json::json!({"kind": "logistic_regression", "input_dim": 30, "num_classes": 2}),
        )
        .unwrap();
        let fake: Shared = Arc::default();
        fake.lock().unwrap().model =
            encode_safetensors(&spec, &spec.initial_parameters(3)).unwrap();
        let app = Router::new()
            .route("/v1/participant/enrol", post(enrol))
            .route("/v1/participant/task", get(task))
            .route("/v1/participant/models/{version}", get(model))
            .route(
                "/v1/participant/rounds/{round}/messages/{stage}",
                post(message),
            )
            .route(
                "/v1/participant/rounds/{round}/broadcast/{stage}",
                get(broadcast),
            )
            .route("/v1/participant/rounds/{round}/decline", post(decline))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        // The site's records and statistics.
        let text = std::fs::read_to_string(DATA).unwrap();
        let data = dir.path().join("data.csv");
        std::fs::write(
            &data,
            text.lines().take(150).collect::<Vec<_>>().join("\n") + "\n",
        )
        .unwrap();
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
        let state = dir.path().join("state");
        let ledger = state.join("ledger.sqlite");
        let log = dir.path().join("agent.log");
        let agent = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
            .arg("run")
            .args(["--coordinator-url", &url])
            .arg("--state-dir")
            .arg(&state)
            .args([
                "--name",
                "site",
                "--label",
                "malignant",
                "--dataset-id",
                "site-records",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--stats")
            .arg(&stats)
            .args([
                "--epsilon",
                "50",
                "--delta",
                "1e-5",
                "--poll-wait-secs",
                "1",
            ])
            .args(["--max-backoff-secs", "1"])
            .args(extra)
            .env("CONFIDE_ENROLMENT_TOKEN", "one-time")
            .env("RUST_LOG", "info")
            .env_remove("CONFIDE_CONFIG")
            .env_remove("CONFIDE_MIN_COHORT")
            .env_remove("CONFIDE_ACCEPTED_PEERS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn agent");
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let peers = (0..4).map(|_| IdentityKey::generate(&mut rng)).collect();
        let w = Self {
            fake,
            agent,
            log,
            ledger,
            peers,
            spec,
            rng,
            _dir: dir,
        };
        w.wait("the agent to enrol", 60, |f| f.agent_key.is_some())
            .await;
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait(&self, what: &str, secs: u64, done: impl Fn(&Fake) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if done(&self.fake.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}\n{}", self.log_text());
    }

    /// Waits until the agent's log contains `needle`.
    async fn wait_log(&self, needle: &str, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if self.log_text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the agent's log never said {needle:?}\n{}", self.log_text());
    }

    /// A malicious-model round of the agent (index 0, id 1) and `peers` (ids 2, 3, …) holding `keys`.
    fn task(&self, round_id: i64, keys: Vec<IdentityPublicKey>) -> RoundTask {
        let n = keys.len() as u32;
        let dp = DpParams {
            sampling_rate: 0.2,
            noise_multiplier: 1.0,
            target_epsilon: None,
            local_epochs: 1,
            clip_norm: 1.0,
            expected_batch_size: 30.0,
        };
        let num_parameters = self.spec.num_parameters();
        let protocol = SecAggParams {
            round_id: 1000 + round_id as u64,
            participants: n,
            threshold: n / 2 + 1,
            graph: GraphKind::Complete,
            graph_seed: [0; 32],
            vector_len: num_parameters as u32 + 1,
            bits: 32,
            threat_model: ThreatModel::Malicious,
            max_corrupt: 0,
            roster: Roster::new(keys).unwrap(),
        };
        protocol.validate().unwrap();
        let model = self.fake.lock().unwrap().model.clone();
        RoundTask {
            round_id,
            study_id: 1,
            round_number: round_id,
            stage: RoundStage::AdvertiseKeys,
            submitted: false,
            stage_deadline_ms: i64::MAX / 2,
            model_version: 0,
            model_sha256: hex::encode(Sha256::digest(&model)),
            planned_events: planned_events(&dp),
            dp,
            local_training: LocalTraining::default(),
            secagg: SecAggConfig {
                threat_model: ThreatModel::Malicious,
                corrupt_fraction: 0.0,
                threshold: None,
                graph: GraphParams::Complete,
                quantisation: QuantisationConfig {
                    clip_range: Some(4.0),
                    bits: 32,
                    max_weight: 1000,
                },
            },
            num_parameters: num_parameters as i64,
            participant_index: 0,
            participant_ids: (AGENT_ID..AGENT_ID + i64::from(n)).collect(),
            quantisation: QuantizationParams::for_participants(4.0, 32, n, 1000).unwrap(),
            protocol,
            preprocessing: None,
            evaluation: None,
            purpose: RoundPurpose::Training,
            statistics: None,
        }
    }

    fn agent_key(&self) -> IdentityPublicKey {
        self.fake.lock().unwrap().agent_key.expect("enrolled")
    }

    /// Publishes `task` at `stage` with `broadcast` for the agent.
    fn open(&self, task: &RoundTask, stage: RoundStage, broadcast: Option<String>) {
        let mut f = self.fake.lock().unwrap();
        let mut t = task.clone();
        t.stage = stage;
        if let Some(b) = broadcast {
            f.broadcasts.insert((t.round_id, stage), b);
        }
        f.task = Some(t);
    }

    /// The agent's message for a stage, once it arrives.
    async fn agent_message(&self, round: i64, stage: RoundStage, secs: u64) -> Vec<u8> {
        self.wait(
            &format!("the agent's {} message", stage.as_str()),
            secs,
            |f| f.messages.contains_key(&(round, stage)),
        )
        .await;
        self.fake.lock().unwrap().messages[&(round, stage)].clone()
    }

    fn sent(&self, round: i64, stage: RoundStage) -> bool {
        self.fake
            .lock()
            .unwrap()
            .messages
            .contains_key(&(round, stage))
    }

    fn declined(&self, round: i64) -> Option<String> {
        self.fake.lock().unwrap().declines.get(&round).cloned()
    }
}

/// Honest peers (indices 1..) playing the sans-IO client against the real server.
struct Peers {
    clients: Vec<SecAggClient>,
}

impl Peers {
    /// Starts each peer and feeds its AdvertiseKeys, and the agent's, to `server`.
    fn advertise(
        w: &mut World,
        task: &RoundTask,
        server: &mut SecAggServer,
        agent_msg: &[u8],
    ) -> Self {
        server.handle_message(agent_msg).expect("the agent's keys");
        let mut clients = Vec::new();
        for i in 1..task.protocol.participants {
            let (c, msg) = SecAggClient::with_identity(
                task.protocol.clone(),
                i,
                w.peers[i as usize - 1].clone(),
                &mut w.rng,
            )
            .unwrap();
            server.handle_advertise_keys(&msg).unwrap();
            clients.push(c);
        }
        server.close_stage().unwrap();
        Self { clients }
    }
}

/// Runs round `round` honestly (real server, three honest peers) until every masked input is in; returns the
/// server (in MaskedInputCollection, all inputs received) and the peers.
async fn honest_until_masked(w: &mut World, t1: &RoundTask, round: i64) -> (SecAggServer, Peers) {
    let mut server = SecAggServer::new(t1.protocol.clone()).unwrap();
    w.open(t1, RoundStage::AdvertiseKeys, None);
    let adv = w.agent_message(round, RoundStage::AdvertiseKeys, 120).await;
    let mut peers = Peers::advertise(w, t1, &mut server, &adv);
    let dir = server.key_directory().unwrap();
    w.open(t1, RoundStage::ShareKeys, Some(dir.to_json()));
    let shares = w.agent_message(round, RoundStage::ShareKeys, 30).await;
    server.handle_message(&shares).expect("the agent's dealing");
    for c in &mut peers.clients {
        let m = c.handle_key_directory(&dir, &mut w.rng).unwrap();
        server.handle_share_keys(&m).unwrap();
    }
    server.close_stage().unwrap();
    w.open(
        t1,
        RoundStage::ShareVerification,
        Some(server.routed_shares(0).unwrap().to_json()),
    );
    let verdict = w
        .agent_message(round, RoundStage::ShareVerification, 30)
        .await;
    server
        .handle_message(&verdict)
        .expect("the agent's acknowledgement");
    for (i, c) in peers.clients.iter_mut().enumerate() {
        let routed = server.routed_shares(i as u32 + 1).unwrap();
        let v = c.verify_routed_shares(&routed, &mut w.rng).unwrap();
        server.handle_share_verification(&v).unwrap();
    }
    server.close_stage().unwrap();
    let request = server.masked_input_request().unwrap();
    w.open(
        t1,
        RoundStage::MaskedInputCollection,
        Some(request.to_json()),
    );
    let masked = w
        .agent_message(round, RoundStage::MaskedInputCollection, 30)
        .await;
    server
        .handle_message(&masked)
        .expect("the agent's masked input");
    let zeros = vec![0u32; t1.protocol.vector_len as usize];
    for c in &mut peers.clients {
        let m = c.handle_masked_input_request(&request, &zeros).unwrap();
        server.handle_masked_input(&m).unwrap();
    }
    (server, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_a_lying_coordinator_before_revealing_anything() {
    let mut w = World::start().await;
    let me = w.agent_key();
    let honest: Vec<IdentityPublicKey> = std::iter::once(me)
        .chain(w.peers[..3].iter().map(IdentityKey::public))
        .collect();

    // ---- 1. |U3| < t at the consistency check ----
    let t1 = w.task(1, honest.clone());
    let (mut server, mut peers) = honest_until_masked(&mut w, &t1, 1).await;
    // The lie: U3 = {agent, one peer}, below t = 3 — the sum of two inputs would give each the other's update.
    let lie = ConsistencyCheckRequest {
        version: WIRE_VERSION,
        round_id: t1.protocol.round_id,
        survivors: vec![0, 1],
    };
    w.open(&t1, RoundStage::ConsistencyCheck, Some(lie.to_json()));
    w.wait_log("leaving the round", 30).await;
    // The honest U3 and three valid peer signatures over it (≥ t): the agent, which never signed it, still reveals
    // nothing.
    server.close_stage().unwrap();
    let real = server.consistency_check_request().unwrap();
    let mut signatures = Vec::new();
    for (i, c) in peers.clients.iter_mut().enumerate() {
        let s = c.handle_consistency_check_request(&real).unwrap();
        signatures.push(SurvivorSignature {
            signer: i as u32 + 1,
            signature: s.signature,
        });
    }
    let signed = SignedSurvivors {
        version: WIRE_VERSION,
        round_id: t1.protocol.round_id,
        survivors: real.survivors.clone(),
        signatures,
    };
    w.open(&t1, RoundStage::Unmasking, Some(signed.to_json()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !w.sent(1, RoundStage::ConsistencyCheck),
        "the agent signed a too-small U3\n{}",
        w.log_text()
    );
    assert!(
        !w.sent(1, RoundStage::Unmasking),
        "the agent revealed shares\n{}",
        w.log_text()
    );
    let log = w.log_text();
    assert!(
        log.contains("survivors") || log.contains("threshold"),
        "the log says why\n{log}"
    );

    // ---- 2. a pinned peer's identity key swapped ----
    let mut swapped = honest.clone();
    swapped[2] = w.peers[3].public();
    let t2 = w.task(2, swapped);
    w.open(&t2, RoundStage::AdvertiseKeys, None);
    w.wait("the agent to decline round 2", 30, |f| {
        f.declines.contains_key(&2)
    })
    .await;
    let reason = w.declined(2).unwrap();
    assert!(
        reason.contains("participant 3's identity key changed"),
        "{reason}"
    );
    assert!(!w.sent(2, RoundStage::AdvertiseKeys));

    // ---- 3. fewer other sites than the minimum cohort (3) ----
    let t3 = w.task(3, honest[..3].to_vec());
    w.open(&t3, RoundStage::AdvertiseKeys, None);
    w.wait("the agent to decline round 3", 30, |f| {
        f.declines.contains_key(&3)
    })
    .await;
    let reason = w.declined(3).unwrap();
    assert!(reason.contains("minimum cohort is 3"), "{reason}");

    // ---- 4. a peer's advertised key substituted in the key directory ----
    let t4 = w.task(4, honest.clone());
    let mut server = SecAggServer::new(t4.protocol.clone()).unwrap();
    w.open(&t4, RoundStage::AdvertiseKeys, None);
    let adv = w.agent_message(4, RoundStage::AdvertiseKeys, 120).await;
    Peers::advertise(&mut w, &t4, &mut server, &adv);
    let mut dir = server.key_directory().unwrap();
    dir.participants[2].mask_public_key = *b"a key the coordinator controls.."; // not what peer 2 signed
    let before = w.log_text().matches("leaving the round").count();
    w.open(&t4, RoundStage::ShareKeys, Some(dir.to_json()));
    let until = Instant::now() + Duration::from_secs(30);
    while w.log_text().matches("leaving the round").count() == before {
        assert!(Instant::now() < until, "no refusal\n{}", w.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !w.sent(4, RoundStage::ShareKeys),
        "the agent dealt shares against a substituted key\n{}",
        w.log_text()
    );

    // ---- 5. split views: the agent signs U3, the peers are shown another U3' and sign that ----
    let t5 = w.task(5, honest.clone());
    let (mut server, mut peers) = honest_until_masked(&mut w, &t5, 5).await;
    server.close_stage().unwrap();
    let real = server.consistency_check_request().unwrap();
    w.open(&t5, RoundStage::ConsistencyCheck, Some(real.to_json()));
    w.agent_message(5, RoundStage::ConsistencyCheck, 30).await;
    // U3' leaves the agent out: peers asked to unmask with it would reveal the agent's mask-key shares, while the
    // agent's own view has it in the sum.
    let other = ConsistencyCheckRequest {
        version: WIRE_VERSION,
        round_id: t5.protocol.round_id,
        survivors: vec![1, 2, 3],
    };
    let mut signatures = Vec::new();
    for (i, c) in peers.clients.iter_mut().enumerate() {
        let s = c.handle_consistency_check_request(&other).unwrap();
        signatures.push(SurvivorSignature {
            signer: i as u32 + 1,
            signature: s.signature,
        });
    }
    let before = w.log_text().matches("leaving the round").count();
    for survivors in [real.survivors.clone(), other.survivors.clone()] {
        // Whichever U3 the coordinator claims, the signatures are not t over the one the agent signed.
        let forged = SignedSurvivors {
            version: WIRE_VERSION,
            round_id: t5.protocol.round_id,
            survivors,
            signatures: signatures.clone(),
        };
        w.open(&t5, RoundStage::Unmasking, Some(forged.to_json()));
        if w.log_text().matches("leaving the round").count() > before {
            break;
        }
        let until = Instant::now() + Duration::from_secs(15);
        while w.log_text().matches("leaving the round").count() == before && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        w.log_text().matches("leaving the round").count() > before,
        "the agent did not refuse the split view\n{}",
        w.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !w.sent(5, RoundStage::Unmasking),
        "the agent revealed shares under a split view\n{}",
        w.log_text()
    );

    // Charged twice: rounds 1 and 5, whose masked inputs it sent (the coordinator then lied); the declined rounds and
    // round 4, in which it trained and advertised but sent no masked input, cost nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_confide-participant"))
        .args(["budget", "--json", "--ledger"])
        .arg(&w.ledger)
        .output()
        .unwrap();
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["datasets"][0]["rounds_charged"], 2, "{b}");
    let log = w.log_text();
    assert!(!log.contains("test-credential"), "no secrets in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listing_agent_takes_part_only_with_the_peers_it_listed() {
    // The site exchanged fingerprints with three peers out of band; the coordinator adds a fourth identity it
    // controls (a sybil) to a round. Without the list that identity would be pinned on first use.
    let keys = World::peer_keys();
    let listed: Vec<String> = keys[..3].iter().map(|k| k.public().fingerprint()).collect();
    let mut w = World::start_with(&[
        "--accepted-peers".into(),
        listed.join(","),
        "--min-cohort".into(),
        "3".into(),
    ])
    .await;
    let me = w.agent_key();
    let with = |peers: &[IdentityKey]| -> Vec<IdentityPublicKey> {
        std::iter::once(me)
            .chain(peers.iter().map(IdentityKey::public))
            .collect()
    };

    // A sybil in place of a listed peer, and a sybil beside all three: both declined, with the reason.
    let sybil_fp = keys[3].public().fingerprint();
    for (round, peers) in [
        (1, vec![keys[0].clone(), keys[1].clone(), keys[3].clone()]),
        (2, keys.to_vec()),
    ] {
        let t = w.task(round, with(&peers));
        w.open(&t, RoundStage::AdvertiseKeys, None);
        w.wait(&format!("the agent to decline round {round}"), 60, |f| {
            f.declines.contains_key(&round)
        })
        .await;
        let reason = w.declined(round).unwrap();
        assert!(
            reason.contains(&sybil_fp) && reason.contains("not among this site's accepted peers"),
            "{reason}"
        );
        assert!(!w.sent(round, RoundStage::AdvertiseKeys));
    }

    // The listed peers only: the agent takes part (trains and advertises its keys).
    let t3 = w.task(3, with(&keys[..3]));
    let mut server = SecAggServer::new(t3.protocol.clone()).unwrap();
    w.open(&t3, RoundStage::AdvertiseKeys, None);
    let adv = w.agent_message(3, RoundStage::AdvertiseKeys, 120).await;
    Peers::advertise(&mut w, &t3, &mut server, &adv);
    assert_eq!(server.u1(), &[0, 1, 2, 3]);
    assert!(w.declined(3).is_none(), "{:?}", w.declined(3));
}
