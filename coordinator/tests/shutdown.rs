//! Graceful shutdown and logs of the real `confide-coordinator` binary: SIGTERM during a participant's long-poll
//! answers the poll, releases the process's round leases (a second process takes the round over at once, although
//! the lease would last a minute) and exits 0; `--log-json` writes one JSON object per line on stderr, every HTTP
//! request logged in a span carrying the request id that the response echoes in `x-request-id`.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::RoundStage;
use confide_coordinator::store::Backend;
use serde_json::{Value, json};
use support::sim::{Http, Sim, wait_until};
use support::{CoordinatorProcess, TestDb, create_operator_token};

/// Longer than the test may take: a lease that is not released is not taken over within the test.
const LEASE_TTL_MS: &str = "60000";

fn study_request() -> Value {
    json!({
        "name": "shutdown",
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "dp": {"sampling_rate": 0.05, "noise_multiplier": 1.2, "local_epochs": 1, "clip_norm": 1.0, "expected_batch_size": 8.0},
        "secagg": {"graph": {"kind": "complete"}, "quantisation": {"clip_range": 2.0, "bits": 32}},
        "budget": {"epsilon": 10.0, "delta": 1e-5},
        "rounds": 5,
        "min_participants": 3,
        "deadlines": {"advertise_keys_secs": 600, "share_keys_secs": 600, "masked_input_secs": 600, "unmasking_secs": 600}
    })
}

async fn sigterm_during_long_poll(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let op = create_operator_token(&db.url, db.schema.as_deref(), "op");
    let mut a = CoordinatorProcess::start_with(
        &db.url,
        db.schema.as_deref(),
        dir.path().join("a.log"),
        &["--log-json", "--lease-ttl-ms", LEASE_TTL_MS],
    );
    let http = Http::new(&a.base_url);
    let (status, study) = http
        .post_json("/v1/studies", Some(&op), &study_request())
        .await;
    assert_eq!(status, 201, "{study}");
    let sid = study["id"].as_i64().unwrap();
    let mut sims = Vec::new();
    for i in 0..3 {
        let (_, tok) = http
            .post_json(
                &format!("/v1/studies/{sid}/enrolment-tokens"),
                Some(&op),
                &json!({"label": "x"}),
            )
            .await;
        let (status, e) = http
            .post_json(
                "/v1/participant/enrol",
                None,
                &json!({"token": tok["token"], "name": format!("h{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{e}");
        sims.push(Sim::new(
            e["participant_id"].as_i64().unwrap(),
            e["credential"].as_str().unwrap().into(),
            vec![0.1; 8],
            1,
        ));
    }
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    assert_eq!(sims[0].step(&http).await, Some(RoundStage::AdvertiseKeys));
    wait_until(30, "process A to drive the round", || async {
        a.log_text().contains("driving round")
    })
    .await;

    // Participant 0 has answered, so its long-poll waits (up to 60 s) — until the SIGTERM.
    let poll = {
        let http = http.clone();
        let cred = sims[0].cred.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http
                .get("/v1/participant/task?wait_secs=60", &cred)
                .await
                .expect("long-poll answered");
            let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let status = r.status().as_u16();
            let task: Value = r.json().await.unwrap();
            (status, task, request_id, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!poll.is_finished(), "the long-poll should still be waiting");
    let exit = a
        .terminate_within(Duration::from_secs(30))
        .await
        .expect("the coordinator exits after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    let (status, task, poll_request_id, waited) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(task["kind"], "round", "{task}");
    assert_eq!(task["submitted"], true);
    assert!(
        waited < Duration::from_secs(30),
        "the long-poll was answered at shutdown, not after its 60 s ({waited:?})"
    );

    // B takes the round over although A's lease would have lasted a minute: A released it.
    let b = CoordinatorProcess::start_with(
        &db.url,
        db.schema.as_deref(),
        dir.path().join("b.log"),
        &["--lease-ttl-ms", LEASE_TTL_MS],
    );
    let http = Http::new(&b.base_url);
    wait_until(20, "process B to take the round over", || async {
        b.log_text()
            .lines()
            .any(|l| l.contains("driving round") && l.contains(&format!("round={rid}")))
    })
    .await;
    assert_eq!(sims[1].step(&http).await, Some(RoundStage::AdvertiseKeys));
    assert_eq!(sims[2].step(&http).await, Some(RoundStage::AdvertiseKeys));
    wait_until(20, "B to close advertise_keys", || async {
        db.store.get_round(rid).await.unwrap().stage == "share_keys"
    })
    .await;

    // A's stderr: JSON lines only; every request logged with its id; the long-poll's id is the one it echoed.
    let log = a.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "finished processing request")
        .collect();
    assert!(
        finished.len() >= 8,
        "every request is logged: {} lines",
        finished.len()
    );
    for l in &finished {
        let id = l["span"]["request_id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 36, "a UUID request id in {l}");
        assert_eq!(l["span"]["name"], "request");
    }
    let poll_line = finished
        .iter()
        .find(|l| l["span"]["request_id"] == poll_request_id.as_str())
        .unwrap_or_else(|| panic!("no log line for request {poll_request_id}:\n{log}"));
    assert_eq!(poll_line["span"]["path"], "/v1/participant/task");
    assert_eq!(poll_line["fields"]["status"], 200);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "shutting down"),
        "{log}"
    );
    drop(b);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_long_polls_releases_leases_and_exits_0_sqlite() {
    sigterm_during_long_poll(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_long_polls_releases_leases_and_exits_0_postgres() {
    sigterm_during_long_poll(Backend::Postgres).await;
}
