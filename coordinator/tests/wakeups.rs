//! Long-polls wake at once on the changes that concern them, also when another coordinator process (its own
//! connection pool on the same database) made the change: Postgres through LISTEN/NOTIFY, SQLite through the
//! data version. Without the relay they would only see it on the safety-net timer (5 s).

mod support;

use std::time::{Duration, Instant};

use confide_common::api::{RoundStage, TaskResponse};
use confide_coordinator::service::Limits;
use confide_coordinator::service::wakeups::SAFETY_NET;
use support::{Served, TestDb, start_round, study_request};

/// Well under the safety net: only a relayed notification can answer this fast.
const PROMPT: Duration = Duration::from_millis(2500);

async fn a_round_started_in_one_process_wakes_the_polls_of_another(db: &TestDb) {
    assert!(PROMPT < SAFETY_NET);
    let a = Served::start(db, Limits::default()).await;
    let other = db.another_connection().await;
    let b = Served::start(&other, Limits::default()).await;
    let study = a.create_study(&study_request("wake")).await;
    let mut creds = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        creds.push(a.enrol(study, name).await.1);
    }
    // Each participant long-polls process B; let the polls settle into their wait.
    let polls: Vec<_> = creds
        .iter()
        .map(|c| {
            let client = b.base.with_token(c);
            tokio::spawn(async move {
                let asked = Instant::now();
                let task = client.poll_task(30).await.expect("poll");
                (task, asked.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let round = start_round(&a.op, study).await;
    for poll in polls {
        let (task, _) = poll.await.expect("poll task");
        let TaskResponse::Round(t) = task else {
            panic!("expected the round, got {task:?}");
        };
        assert_eq!(t.round_id, round);
        assert_eq!(t.stage, RoundStage::AdvertiseKeys);
        let waited = started.elapsed();
        assert!(
            waited < PROMPT,
            "process B answered {waited:?} after process A started the round"
        );
    }
    // An operator watching the round on B sees A's abort at once.
    let watcher = b.op.clone();
    let watch = tokio::spawn(async move {
        watcher
            .wait_round(round, Some(RoundStage::AdvertiseKeys), 30)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborted = Instant::now();
    a.op.abort_round(round, "test").await.expect("abort");
    let info = watch.await.expect("watch task").expect("watch");
    assert!(info.outcome.is_some(), "{info:?}");
    assert!(aborted.elapsed() < PROMPT, "{:?}", aborted.elapsed());
    b.stop().await;
    a.stop().await;
    other.store.close().await;
}

both_backends!(
    a_round_started_in_one_process_wakes_another,
    a_round_started_in_one_process_wakes_the_polls_of_another
);
