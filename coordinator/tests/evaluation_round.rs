//! Federated evaluation over real HTTP with simulated participants, on SQLite and Postgres: a study that declares
//! evaluation sends it with every task and charges training to the training part; after a published version the
//! next round evaluates it (three values, one zCDP release charged to the evaluation part, in parallel with
//! training); the coordinator stores the noisy totals with no new model version and shows them in
//! `GET /v1/studies/{id}/metrics` and the gauges; a site's decline leaves it out; bad declarations are 422.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::{RoundInfo, RoundOutcome, RoundPurpose};
use confide_common::dp::{
    AccountantKind, DataPartition, PartitionedEvent, PrivacyEvent, partitioned_epsilon,
};
use confide_common::evaluation::{EvaluationConfig, EvaluationRelease, EvaluationTotals};
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::sim::{Sim, enrol_sims};
use support::{Served, TestDb, set, start_round, study_request, typed};

fn evaluation(epsilon: Value, fraction: Value) -> Value {
    json!({"holdout_fraction": fraction, "epsilon": epsilon, "schedule": {"kind": "every_k_rounds", "k": 2},
           "min_records": 5, "loss_max": 2.0, "max_records_per_site": 1000, "seed": 11})
}

fn request(name: &str, evaluation: Value) -> Value {
    let mut req = set(
        study_request(name),
        &[
            ("/secagg/quantisation/max_weight", json!(1000)),
            ("/rounds", json!(3)),
        ],
    );
    req["evaluation"] = evaluation;
    req
}

async fn run_round(served: &Served, sims: &mut [Sim], rid: i64) -> RoundInfo {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        for s in sims.iter_mut() {
            s.step(&served.base).await;
        }
        let status = served.op.get_round(rid).await.unwrap();
        if status.outcome.is_some() {
            return status;
        }
        assert!(Instant::now() < until, "round {rid} timed out: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A training round: every site sends a small update.
async fn train(served: &Served, sims: &mut [Sim], sid: i64) {
    let rid = start_round(&served.op, sid).await;
    let task = sims[0].task(&served.base).await.unwrap();
    assert_eq!(task.purpose, RoundPurpose::Training);
    assert!(task.evaluation.is_some(), "every task carries the hold-out");
    for s in sims.iter_mut() {
        s.update = vec![0.01; 8];
    }
    let status = run_round(served, sims, rid).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
}

/// Site i's (correct, count, loss sum) without noise: the coordinator's arithmetic is under test.
fn site_vector(i: usize) -> Vec<f32> {
    let n = 20.0 + 10.0 * i as f32;
    vec![0.8 * n, n, 0.4 * n]
}

async fn evaluation_rounds(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let sid = served
        .create_study(&request("eval", evaluation(json!(0.5), json!(0.25))))
        .await;
    let mut sims = enrol_sims(&served.op, &served.base, sid, 3, |_, _| 0.0, |_| 1).await;
    let config: EvaluationConfig =
        serde_json::from_value(evaluation(json!(0.5), json!(0.25))).unwrap();
    let release = EvaluationRelease::for_config(&config, 1e-5).unwrap();

    // Schedule every 2 rounds (and the last): round 1 trains, round 2 trains, then version 2 is evaluated.
    train(&served, &mut sims, sid).await;
    train(&served, &mut sims, sid).await;
    let rid = start_round(&served.op, sid).await;
    let task = sims[0].task(&served.base).await.unwrap();
    assert_eq!(task.purpose, RoundPurpose::Evaluation);
    assert_eq!(task.model_version, 2, "the latest published version");
    assert_eq!((task.num_parameters, task.protocol.vector_len), (3, 4));
    let [PrivacyEvent::ZcdpGaussian { rho }] = task.planned_events[..] else {
        panic!("one zCDP release planned: {:?}", task.planned_events);
    };
    let PrivacyEvent::ZcdpGaussian { rho: expected } = release.event() else {
        unreachable!()
    };
    assert!(
        (rho - expected).abs() <= 1e-12 * expected,
        "{rho} vs {expected}"
    );
    assert!(
        served
            .op
            .study_metrics(sid)
            .await
            .unwrap()
            .evaluations
            .is_empty(),
        "nothing before the round completes"
    );
    for (i, s) in sims.iter_mut().enumerate() {
        s.update = site_vector(i);
    }
    let status = run_round(&served, &mut sims, rid).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
    assert_eq!(status.purpose, RoundPurpose::Evaluation);

    // No new weights; the metrics of version 2, from the aggregated totals.
    let versions = served.op.list_model_versions(sid).await.unwrap();
    assert_eq!(versions.len(), 3, "versions 0..=2, none for the evaluation");
    let metrics = served.op.study_metrics(sid).await.unwrap();
    assert_eq!((metrics.study_id, metrics.delta), (sid, 1e-5));
    let [m] = &metrics.evaluations[..] else {
        panic!("one evaluation: {metrics:?}");
    };
    let totals: Vec<f64> = (0..3)
        .map(|j| (0..3).map(|i| f64::from(site_vector(i)[j])).sum())
        .collect();
    let want = EvaluationTotals::from_vector(&totals, 3, &release).unwrap();
    assert_eq!(
        (m.round_id, m.model_version, m.training_rounds, m.sites),
        (rid, 2, 2, 3)
    );
    assert!((m.accuracy - 0.8).abs() < 1e-3, "{m:?}");
    assert!((m.loss - 0.4).abs() < 1e-3, "{m:?}");
    assert!((m.evaluation_records - 90.0).abs() < 1e-2, "{m:?}");
    assert!(
        (m.accuracy_std - want.accuracy_std()).abs() < 1e-3 * want.accuracy_std(),
        "{m:?}"
    );
    assert!((m.noise_std_per_site - release.noise_std()).abs() <= 1e-12 * release.noise_std());
    assert_eq!(m.release_epsilon, 0.5);

    // Charged to the evaluation part: ε is the larger part's, not the sum (parallel composition).
    let training = PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.05,
        noise_multiplier: 1.2,
        steps: 20,
    };
    let tag = |partition, event| PartitionedEvent { partition, event };
    let ledger = [
        tag(DataPartition::Training, training),
        tag(DataPartition::Training, training),
        tag(DataPartition::Evaluation, release.event()),
    ];
    let parallel = partitioned_epsilon(&ledger, 1e-5, AccountantKind::Pld).unwrap();
    let report = served.op.privacy_report(sid).await.unwrap();
    for p in &report.participants {
        assert_eq!(p.rounds_charged, 3);
        assert!(
            (p.epsilon_spent - parallel).abs() <= 1e-9 * parallel,
            "{p:?} vs {parallel}"
        );
    }
    assert!((m.epsilon_spent - parallel).abs() <= 1e-9 * parallel);

    // The gauges show the latest evaluation.
    let text = served.state.metrics.render().unwrap();
    let gauge = format!("confide_model_accuracy{{study=\"{sid}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&gauge)).expect(&gauge);
    let shown: f64 = line[gauge.len()..].parse().unwrap();
    assert!((shown - m.accuracy).abs() < 1e-9, "{line}");
    assert!(text.contains(&format!("confide_model_loss{{study=\"{sid}\"}}")));

    // The next round trains (version 2 is evaluated once); the study's last round's version is evaluated too, and
    // evaluation rounds do not count against `rounds`. Here a site declines the evaluation: it is left out.
    train(&served, &mut sims, sid).await;
    let rid = start_round(&served.op, sid).await;
    let task = sims[2].task(&served.base).await.unwrap();
    assert_eq!(
        (task.purpose, task.model_version),
        (RoundPurpose::Evaluation, 3)
    );
    sims[2]
        .at(&served.base)
        .decline_round(
            rid,
            "too few evaluation records: fewer than min_records (5)",
        )
        .await
        .unwrap();
    let mut two: Vec<Sim> = sims.drain(..2).collect();
    for (i, s) in two.iter_mut().enumerate() {
        s.update = site_vector(i);
    }
    let status = run_round(&served, &mut two, rid).await;
    // min_participants is 3: with one site declining the round cannot publish; nothing is stored or charged.
    assert_eq!(status.outcome, Some(RoundOutcome::Aborted), "{status:?}");
    assert!(
        status
            .excluded
            .iter()
            .any(|e| e.reason.contains("too few evaluation records")),
        "{status:?}"
    );
    assert_eq!(
        served
            .op
            .study_metrics(sid)
            .await
            .unwrap()
            .evaluations
            .len(),
        1
    );
    // All three training rounds ran and version 3's evaluation was tried once: the study is done.
    let err = served
        .op
        .start_round(sid, &Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("completed all its 3 rounds"),
        "{err}"
    );
    let study = served.op.get_study(sid).await.unwrap();
    assert_eq!(
        study.rounds_completed, 3,
        "evaluation rounds are not among the study's rounds"
    );
    served.stop().await;
}
both_backends!(
    evaluation_rounds_store_dp_metrics_per_model_version,
    evaluation_rounds
);

async fn bad_evaluation(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let before = db.store.state_fingerprint().await.unwrap();
    for (eval, needle) in [
        (
            evaluation(json!(0.5), json!(0.0)),
            "leaves no evaluation records",
        ),
        (evaluation(json!(0.5), json!(1.0)), "no training records"),
        (evaluation(json!(0.0), json!(0.2)), "ε ≤ 0 cannot be"),
        (evaluation(json!(-1.0), json!(0.2)), "ε ≤ 0 cannot be"),
        (
            set(
                evaluation(json!(0.5), json!(0.2)),
                &[("/min_records", json!(300))],
            ),
            "no site could ever evaluate",
        ),
        (
            set(
                evaluation(json!(0.5), json!(0.2)),
                &[("/schedule", json!({"kind": "every_k_rounds", "k": 4}))],
            ),
            "k must be in 1..=rounds (3)",
        ),
        (
            set(
                evaluation(json!(0.5), json!(0.2)),
                &[("/loss_max", json!(0.0))],
            ),
            "loss_max must be a finite number > 0",
        ),
        (
            evaluation(json!(50.0), json!(0.2)),
            "lower evaluation.epsilon",
        ),
    ] {
        let err = served
            .op
            .create_study(&typed(&request("bad-eval", eval)))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    // An unknown field or a non-number is a 4xx naming it, before anything is checked.
    let mut req = request("bad-eval", evaluation(json!(0.5), json!(0.2)));
    req["evaluation"]["holdout"] = json!(0.2);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/studies", served.url))
        .bearer_auth(&served.op_token)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(resp.text().await.unwrap().contains("holdout"));
    // The metrics of an unknown study: 404.
    let err = served.op.study_metrics(999_999).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    served.stop().await;
}
both_backends!(bad_evaluation_declarations_are_422, bad_evaluation);
