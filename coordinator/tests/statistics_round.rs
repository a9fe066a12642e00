//! The statistics round over real HTTP with simulated participants, on SQLite and Postgres: a study that declares
//! one runs it first; every site is charged exactly one zCDP release; the coordinator publishes the mean and std
//! derived from the aggregated totals with a model version of unchanged weights, shows them with the study, and
//! hands them to every later (training) round.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::{RoundInfo, RoundOutcome, RoundPurpose};
use confide_common::dp::{AccountantKind, PrivacyEvent, PrivacyLedger};
use confide_common::preprocessing::Preprocessing;
use confide_common::statistics::{ReleaseParams, derive};
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::sim::{Sim, enrol_sims};
use support::{Served, TestDb, set, start_round, study_request, typed};

fn preprocessing(epsilon: f64) -> Value {
    json!({
        "feature_ranges": [
            {"name": "age", "min": 0.0, "max": 100.0},
            {"name": "dose", "min": -1.0, "max": 1.0},
            {"name": "score", "min": 0.0, "max": 10.0}
        ],
        "statistics_round": {"epsilon": epsilon, "max_records_per_site": 1000}
    })
}

fn request(name: &str, epsilon: f64) -> Value {
    let mut req = set(
        study_request(name),
        &[("/secagg/quantisation/max_weight", json!(1000))],
    );
    req["preprocessing"] = preprocessing(epsilon);
    req
}

/// Site i's released vector (noise left out: the coordinator's arithmetic is under test): Σz per feature, Σz² per
/// feature, the record count.
fn site_vector(i: usize) -> Vec<f32> {
    let n = 10.0 + i as f32;
    vec![0.2 * n, -0.1 * n, 0.5 * n, 0.3 * n, 0.2 * n, 0.4 * n, n]
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

async fn statistics_round(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let sid = served.create_study(&request("stats", 0.5)).await;
    let mut sims = enrol_sims(&served.op, &served.base, sid, 3, |_, _| 0.0, |_| 1).await;

    // The first round is the statistics round: one zCDP release of 2·3 + 1 values per site.
    let rid = start_round(&served.op, sid).await;
    let task = sims[0].task(&served.base).await.unwrap();
    let release = ReleaseParams::for_target(3, 0.5, 1e-5).unwrap();
    assert_eq!(task.purpose, RoundPurpose::Statistics);
    // The same ρ (to the last bit or two: JSON does not round-trip every f64 exactly).
    let [PrivacyEvent::ZcdpGaussian { rho: planned }] = task.planned_events[..] else {
        panic!("one zCDP release planned: {:?}", task.planned_events);
    };
    let PrivacyEvent::ZcdpGaussian { rho } = release.event() else {
        unreachable!()
    };
    assert!((planned - rho).abs() <= 1e-12 * rho, "{planned} vs {rho}");
    assert_eq!(task.planned_events.len(), 1);
    assert_eq!(task.num_parameters, 7);
    assert_eq!(task.protocol.vector_len, 8);
    assert!(task.statistics.is_none());
    for (i, s) in sims.iter_mut().enumerate() {
        s.update = site_vector(i);
    }
    let status = run_round(&served, &mut sims, rid).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
    assert_eq!(status.purpose, RoundPurpose::Statistics);

    // Published with version 1, whose weights are version 0's; derived from the aggregated totals.
    let versions = served.op.list_model_versions(sid).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].sha256, versions[0].sha256, "weights unchanged");
    let published = versions[1]
        .statistics
        .clone()
        .expect("statistics published");
    let totals: Vec<f64> = (0..7)
        .map(|j| (0..3).map(|i| f64::from(site_vector(i)[j])).sum())
        .collect();
    let prep: Preprocessing = serde_json::from_value(preprocessing(0.5)).unwrap();
    let expected = derive(&prep, &totals).unwrap();
    for (got, want) in published
        .scaling
        .center
        .iter()
        .chain(&published.scaling.scale)
        .zip(expected.center.iter().chain(&expected.scale))
    {
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
    assert_eq!(published.round_id, rid);
    assert_eq!(published.sites, 3);
    assert_eq!((published.epsilon, published.delta), (0.5, 1e-5));
    assert!(
        (published.noise_std_per_site - release.noise_std()).abs() <= 1e-12 * release.noise_std()
    );
    assert!((published.noisy_record_count - 33.0).abs() < 1e-3);
    let study = served.op.get_study(sid).await.unwrap();
    assert_eq!(study.statistics.as_ref(), Some(&published));
    // Every site is charged exactly the release.
    let report = served.op.privacy_report(sid).await.unwrap();
    let one_release = PrivacyLedger {
        events: vec![release.event()],
    }
    .epsilon(1e-5, AccountantKind::Pld)
    .unwrap();
    for p in &report.participants {
        assert_eq!(p.rounds_charged, 1);
        assert!(
            (p.epsilon_spent - one_release).abs() <= 1e-9 * one_release,
            "{p:?}"
        );
    }
    assert!(one_release <= 0.5);

    // The next round trains, and hands the statistics to every site.
    let rid = start_round(&served.op, sid).await;
    let task = sims[0].task(&served.base).await.unwrap();
    assert_eq!(task.purpose, RoundPurpose::Training);
    assert_eq!(task.num_parameters, 8);
    assert_eq!(task.statistics.as_ref(), Some(&published));
    for s in sims.iter_mut() {
        s.update = vec![0.01; 8];
    }
    let status = run_round(&served, &mut sims, rid).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
    assert_eq!(status.purpose, RoundPurpose::Training);
    let versions = served.op.list_model_versions(sid).await.unwrap();
    assert_eq!(
        versions[2].statistics.as_ref(),
        Some(&published),
        "carried on"
    );

    // Unusable statistics rounds are refused at creation, nothing stored.
    let before = db.store.state_fingerprint().await.unwrap();
    for (epsilon, needle) in [
        (0.0, "ε ≤ 0 cannot be"),
        (-1.0, "ε ≤ 0 cannot be"),
        (50.0, "the statistics round and one training round"),
    ] {
        let err = served
            .op
            .create_study(&typed(&request("bad-stats", epsilon)))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    served.stop().await;
}
both_backends!(
    a_statistics_round_publishes_dp_statistics_for_later_rounds,
    statistics_round
);
