//! Graceful shutdown and logs of the real `confide-coordinator` binary: SIGTERM during a participant's long-poll
//! answers the poll, releases the process's round leases (a second process takes the round over at once, although
//! the lease would last a minute) and exits 0; `--log-json` writes one JSON object per line on stderr, every HTTP
//! request logged in a span carrying the request id that the response echoes in `x-request-id`.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::RoundStage;
use confide_coordinator::store::Backend;
use serde_json::Value;
use support::sim::{enrol_sims, wait_until};
use support::{
    CoordinatorProcess, TestDb, create_operator_token, deadlines, set, start_round, study_request,
    typed,
};

/// Longer than the test may take: a lease that is not released is not taken over within the test.
const LEASE_TTL_MS: &str = "60000";

fn request() -> Value {
    set(study_request("shutdown"), &[("/deadlines", deadlines(600))])
}

async fn sigterm_during_long_poll(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let op_token = create_operator_token(&db.url, db.schema.as_deref(), "op");
    let mut a = CoordinatorProcess::start_with(
        &db.url,
        db.schema.as_deref(),
        dir.path().join("a.log"),
        &["--log-json", "--lease-ttl-ms", LEASE_TTL_MS],
    );
    let base = a.client();
    let op = base.with_token(&op_token);
    let sid = op.create_study(&typed(&request())).await.unwrap().id;
    let mut sims = enrol_sims(&op, &base, sid, 3, |_, _| 0.1, |_| 1).await;
    let rid = start_round(&op, sid).await;
    assert_eq!(sims[0].step(&base).await, Some(RoundStage::AdvertiseKeys));
    wait_until(30, "process A to drive the round", || async {
        a.log_text().contains("driving round")
    })
    .await;

    // Participant 0 has answered, so its long-poll waits (up to 60 s) — until the SIGTERM.
    // Raw, for the `x-request-id` the answer carries.
    let poll = {
        let url = format!("{}/v1/participant/task?wait_secs=60", a.base_url);
        let cred = sims[0].cred.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(cred)
                .send()
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
    let base = b.client();
    wait_until(20, "process B to take the round over", || async {
        b.log_text()
            .lines()
            .any(|l| l.contains("driving round") && l.contains(&format!("round={rid}")))
    })
    .await;
    assert_eq!(sims[1].step(&base).await, Some(RoundStage::AdvertiseKeys));
    assert_eq!(sims[2].step(&base).await, Some(RoundStage::AdvertiseKeys));
    wait_until(20, "B to close advertise_keys", || async {
        db.store.get_round(rid).await.unwrap().stage == RoundStage::ShareKeys
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

both_backends_with_processes!(
    sigterm_answers_long_polls_releases_leases_and_exits_0,
    sigterm_during_long_poll
);
