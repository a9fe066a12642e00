//! Studies that run themselves (`POST /v1/studies/{id}/run` and `/stop`) and round progress (who answered the
//! current stage, when a participant was last seen), over real HTTP against in-process coordinators with simulated
//! participants, on SQLite and Postgres: a run waits for participants, survives a coordinator restart and completes
//! the study's rounds; aborted rounds are retried up to `max_retries` and then the run fails, exactly once with two
//! coordinators on one database; the budget ends a run; the operator stops one.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::{
    PrivacyPlanRequest, RoundOutcome, RoundStage, RunState, RunStudyRequest, StopStudyRequest,
    StudyInfo, StudySchedule,
};
use confide_coordinator::Limits;
use confide_coordinator::client::CoordinatorClient;
use serde_json::json;
use support::sim::{Sim, enrol_sims, wait_until};
use support::{Served, TestDb, deadlines, set, start_round, study_request};

fn run_req(pause_secs: u64, max_retries: u32) -> RunStudyRequest {
    RunStudyRequest {
        pause_secs,
        max_retries,
    }
}

async fn study(op: &CoordinatorClient, id: i64) -> StudyInfo {
    op.get_study(id).await.expect("get study")
}

async fn enrol3(served: &Served, sid: i64) -> Vec<Sim> {
    let update = |i: usize, j: usize| ((i * 8 + j) as f32 * 0.37).sin() * 0.5;
    enrol_sims(&served.op, &served.base, sid, 3, update, |_| 1).await
}

/// Lets the simulated participants answer whatever is due until the study's run is no longer running.
async fn follow_run(served: &Served, sims: &mut [Sim], sid: i64, secs: u64) -> StudyInfo {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        for s in sims.iter_mut() {
            s.step(&served.base).await;
        }
        let info = study(&served.op, sid).await;
        let run = info.run.as_ref().expect("the study has a run");
        if run.state != RunState::Running {
            return info;
        }
        assert!(Instant::now() < until, "the run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_waits_survives_a_restart_and_completes(db: &TestDb) {
    {
        let served = Served::start(db, Limits::default()).await;
        let sid = served
            .create_study(&set(study_request("run"), &[("/rounds", json!(2))]))
            .await;
        let before = study(&served.op, sid).await;
        assert_eq!(before.schedule, StudySchedule::Manual);
        assert!(before.run.is_none());
        let info = served.op.run_study(sid, &run_req(0, 2)).await.unwrap();
        assert_eq!(
            info.schedule,
            StudySchedule::Automatic {
                pause_secs: 0,
                max_retries: 2
            }
        );
        assert_eq!(info.run.as_ref().unwrap().state, RunState::Running);
        // Running twice is a conflict.
        let again = served.op.run_study(sid, &run_req(0, 2)).await.unwrap_err();
        assert_eq!(again.status(), Some(409), "{again}");
        // Nobody enrolled: the run waits and says why, starting nothing.
        wait_until(10, "the run to say it waits", || async {
            study(&served.op, sid)
                .await
                .run
                .and_then(|r| r.reason)
                .is_some_and(|r| r.starts_with("waiting for participants: round refused: 0"))
        })
        .await;
        assert!(served.op.list_rounds(sid).await.unwrap().is_empty());
        // A restart: the new coordinator carries the run on.
        served.stop().await;
        let served = Served::start(db, Limits::default()).await;
        let mut sims = enrol3(&served, sid).await;
        let done = follow_run(&served, &mut sims, sid, 90).await;
        let run = done.run.unwrap();
        assert_eq!(run.state, RunState::Completed, "{run:?}");
        assert_eq!(run.reason.as_deref(), Some("all 2 rounds completed"));
        assert!(run.ended_at_ms.is_some());
        let rounds = served.op.list_rounds(sid).await.unwrap();
        assert_eq!(
            rounds
                .iter()
                .map(|r| (r.round_number, r.outcome))
                .collect::<Vec<_>>(),
            [
                (1, Some(RoundOutcome::Completed)),
                (2, Some(RoundOutcome::Completed))
            ]
        );
        assert_eq!(done.rounds_completed, 2);
        // Nothing to stop, nothing left to run.
        let stop = served
            .op
            .stop_study(sid, &StopStudyRequest::default())
            .await
            .unwrap_err();
        assert_eq!(stop.status(), Some(409), "{stop}");
        assert!(stop.to_string().contains("is not running"), "{stop}");
        let rerun = served.op.run_study(sid, &run_req(0, 2)).await.unwrap_err();
        assert_eq!(rerun.status(), Some(422), "{rerun}");
        assert!(
            rerun.to_string().contains("completed all its 2 rounds"),
            "{rerun}"
        );
        served.stop().await;
    }
}

async fn aborted_rounds_are_retried_once_across_two_coordinators(db: &TestDb) {
    {
        let a = Served::start(db, Limits::default()).await;
        let other = db.another_connection().await;
        let b = Served::start(&other, Limits::default()).await;
        // One-second stages and participants that never answer: every round aborts at its first deadline.
        let req = set(study_request("retries"), &[("/deadlines", deadlines(1))]);
        let sid = a.create_study(&req).await;
        let _silent = enrol3(&a, sid).await;
        b.op.run_study(sid, &run_req(0, 1)).await.unwrap();
        let until = Instant::now() + Duration::from_secs(40);
        let run = loop {
            let run = study(&a.op, sid).await.run.unwrap();
            if run.state != RunState::Running {
                break run;
            }
            assert!(Instant::now() < until, "the run did not end: {run:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run.state, RunState::Failed, "{run:?}");
        let reason = run.reason.unwrap();
        assert!(
            reason.starts_with("2 round(s) aborted in a row (max_retries = 1); the last: ")
                && reason.contains("AdvertiseKeys closed with 0 participants"),
            "{reason}"
        );
        // Both coordinators ran the schedule; the first round and one retry were started, once each.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rounds = a.op.list_rounds(sid).await.unwrap();
        assert_eq!(
            rounds
                .iter()
                .map(|r| (r.round_number, r.outcome))
                .collect::<Vec<_>>(),
            [
                (1, Some(RoundOutcome::Aborted)),
                (2, Some(RoundOutcome::Aborted))
            ]
        );
        b.stop().await;
        a.stop().await;
        other.cleanup().await;
    }
}

async fn the_budget_ends_a_run_and_the_operator_stops_one(db: &TestDb) {
    {
        let served = Served::start(db, Limits::default()).await;
        // σ for which exactly one round fits the budget ε = 1 (the planner's smallest σ for one round).
        let plan = served
            .op
            .privacy_plan(&PrivacyPlanRequest {
                target_epsilon: 1.0,
                delta: 1e-5,
                sampling_rate: 0.05,
                steps_per_round: 20,
                rounds: 1,
            })
            .await
            .unwrap();
        let req = set(
            study_request("one-round-budget"),
            &[
                ("/dp/noise_multiplier", json!(plan.noise_multiplier)),
                ("/budget/epsilon", json!(1.0)),
            ],
        );
        let sid = served.create_study(&req).await;
        let mut sims = enrol3(&served, sid).await;
        served.op.run_study(sid, &run_req(0, 2)).await.unwrap();
        let done = follow_run(&served, &mut sims, sid, 60).await;
        let run = done.run.unwrap();
        assert_eq!(run.state, RunState::OutOfBudget, "{run:?}");
        let reason = run.reason.unwrap();
        assert!(
            reason.starts_with(
                "the privacy budget allows no further round: round refused: 0 participant(s)"
            ),
            "{reason}"
        );
        assert!(reason.contains("over its budget 1"), "{reason}");
        assert_eq!(done.rounds_completed, 1);
        assert_eq!(served.op.list_rounds(sid).await.unwrap().len(), 1);

        // The operator stops a run that pauses an hour between rounds; bad inputs are refused.
        let sid = served.create_study(&study_request("stopped")).await;
        let mut sims = enrol3(&served, sid).await;
        for (bad, what) in [
            (run_req(7 * 86_400 + 1, 2), "pause_secs"),
            (run_req(0, 101), "max_retries"),
        ] {
            let e = served.op.run_study(sid, &bad).await.unwrap_err();
            assert_eq!(e.status(), Some(422), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        served.op.run_study(sid, &run_req(3600, 0)).await.unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while study(&served.op, sid).await.rounds_completed < 1 {
            for s in sims.iter_mut() {
                s.step(&served.base).await;
            }
            assert!(Instant::now() < until, "the first round did not complete");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let empty = served
            .op
            .stop_study(
                sid,
                &StopStudyRequest {
                    reason: Some(" ".into()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(empty.status(), Some(422), "{empty}");
        let stopped = served
            .op
            .stop_study(
                sid,
                &StopStudyRequest {
                    reason: Some("maintenance".into()),
                },
            )
            .await
            .unwrap()
            .run
            .unwrap();
        assert_eq!(stopped.state, RunState::Stopped);
        assert_eq!(
            stopped.reason.as_deref(),
            Some("stopped by the operator: maintenance")
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(served.op.list_rounds(sid).await.unwrap().len(), 1);
        // Unknown study.
        let missing = served.op.run_study(9999, &run_req(0, 2)).await.unwrap_err();
        assert_eq!(missing.status(), Some(404), "{missing}");
        served.stop().await;
    }
}

async fn round_progress_shows_who_answered_and_when_seen(db: &TestDb) {
    {
        let served = Served::start(db, Limits::default()).await;
        let sid = served.create_study(&study_request("progress")).await;
        let mut sims = enrol3(&served, sid).await;
        let participants = served.op.list_participants(sid).await.unwrap();
        assert!(participants.iter().all(|p| p.last_seen_ms.is_none()));
        let rid = start_round(&served.op, sid).await;
        let r = served.op.get_round(rid).await.unwrap();
        assert_eq!(r.stage, RoundStage::AdvertiseKeys);
        assert!(r.answered.is_empty());
        let before = confide_runtime::now_ms();
        assert_eq!(
            sims[0].step(&served.base).await,
            Some(RoundStage::AdvertiseKeys)
        );
        let r = served.op.get_round(rid).await.unwrap();
        assert_eq!(r.stage, RoundStage::AdvertiseKeys);
        assert_eq!(r.answered, [sims[0].id]);
        // Seen once its requests were authenticated; the others not yet.
        let first = sims[0].id;
        wait_until(5, "participant 0's last-seen time", || async {
            served
                .op
                .list_participants(sid)
                .await
                .unwrap()
                .iter()
                .any(|p| p.id == first && p.last_seen_ms.is_some())
        })
        .await;
        let seen = served.op.list_participants(sid).await.unwrap();
        let t0 = seen[0].last_seen_ms.unwrap();
        assert!(t0 >= before && t0 <= confide_runtime::now_ms(), "{t0}");
        assert!(seen[1..].iter().all(|p| p.last_seen_ms.is_none()));
        // Within the interval more requests write nothing.
        sims[0].task(&served.base).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = served.op.list_participants(sid).await.unwrap();
        assert_eq!(seen[0].last_seen_ms, Some(t0));
        // Everyone answers: the stage closes and the next one starts with nobody answered.
        for s in sims[1..].iter_mut() {
            s.step(&served.base).await;
        }
        wait_until(10, "the stage to close", || async {
            served.op.get_round(rid).await.unwrap().stage != RoundStage::AdvertiseKeys
        })
        .await;
        let r = served.op.get_round(rid).await.unwrap();
        assert_eq!(r.stage, RoundStage::ShareKeys);
        assert!(r.answered.is_empty(), "{:?}", r.answered);
        sims[2].step(&served.base).await;
        let r = served.op.get_round(rid).await.unwrap();
        assert_eq!(r.answered, [sims[2].id]);
        let seen = served.op.list_participants(sid).await.unwrap();
        assert!(seen.iter().all(|p| p.last_seen_ms.is_some()), "{seen:?}");
        served.stop().await;
    }
}

both_backends!(
    run_waits_survives_a_restart_and_completes_on,
    run_waits_survives_a_restart_and_completes
);
both_backends!(
    aborted_rounds_are_retried_once_across_two_coordinators_on,
    aborted_rounds_are_retried_once_across_two_coordinators
);
both_backends!(
    the_budget_ends_a_run_and_the_operator_stops_one_on,
    the_budget_ends_a_run_and_the_operator_stops_one
);
both_backends!(
    round_progress_shows_who_answered_and_when_seen_on,
    round_progress_shows_who_answered_and_when_seen
);
