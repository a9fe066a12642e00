//! A study created with a target ε instead of a noise multiplier, and the planner behind it
//! (`POST /v1/privacy/plan`) — on SQLite and Postgres, over real HTTP.

mod support;

use confide_common::api::PrivacyPlanRequest;
use confide_common::dp::{
    AccountantKind, PrivacyEvent, PrivacyLedger, noise_multiplier_for_rounds,
};
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::{Served, TestDb, set, study_request, typed};

/// q = 0.05, one local epoch (20 steps per round), 5 rounds, budget ε = 1: σ from a target instead of given.
fn targeted(target: Value) -> Value {
    let mut req = set(
        study_request("targeted"),
        &[
            ("/dp/target_epsilon", target),
            ("/budget/epsilon", json!(1.0)),
        ],
    );
    req["dp"]
        .as_object_mut()
        .expect("dp")
        .remove("noise_multiplier");
    req
}

async fn calibrates(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let study = served
        .op
        .create_study(&typed(&targeted(json!(0.8))))
        .await
        .unwrap();
    let sigma = noise_multiplier_for_rounds(0.8, 1e-5, 0.05, 20, 5, AccountantKind::Pld).unwrap();
    assert_eq!(study.config.dp.noise_multiplier, sigma);
    assert_eq!(study.config.dp.target_epsilon, Some(0.8));
    // Stored and shown as created; the study's five rounds spend at most the target.
    let again = served.op.get_study(study.id).await.unwrap();
    assert_eq!(again.config.dp, study.config.dp);
    let round = PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.05,
        noise_multiplier: sigma,
        steps: 20,
    };
    let eps = PrivacyLedger {
        events: vec![round; 5],
    }
    .epsilon(1e-5, AccountantKind::Pld)
    .unwrap();
    assert!(eps <= 0.8, "ε = {eps}");

    // The planner answers the same σ, with both bounds.
    let plan = served
        .op
        .privacy_plan(&PrivacyPlanRequest {
            target_epsilon: 0.8,
            delta: 1e-5,
            sampling_rate: 0.05,
            steps_per_round: 20,
            rounds: 5,
        })
        .await
        .unwrap();
    assert_eq!(plan.noise_multiplier, sigma);
    assert_eq!(plan.epsilon, eps);
    assert!(
        plan.epsilon_lower <= plan.epsilon && plan.epsilon_lower > 0.0,
        "{plan:?}"
    );
    assert_eq!(plan.accountant, AccountantKind::Pld);

    // Refusals name the field; nothing is stored.
    let before = db.store.state_fingerprint().await.unwrap();
    let both = set(
        targeted(json!(0.5)),
        &[("/dp/noise_multiplier", json!(2.0))],
    );
    let mut neither = targeted(json!(0.5));
    neither["dp"]
        .as_object_mut()
        .unwrap()
        .remove("target_epsilon");
    for (req, needle) in [
        (both, "not both"),
        (
            targeted(json!(1.5)),
            "dp.target_epsilon = 1.5 is above budget.epsilon",
        ),
        (
            targeted(json!(-1.0)),
            "dp.target_epsilon must be a finite number > 0",
        ),
        (
            targeted(json!(0.0)),
            "dp.target_epsilon must be a finite number > 0",
        ),
        (neither, "dp.target_epsilon"),
        (
            set(targeted(json!(0.5)), &[("/dp/sampling_rate", json!(1.5))]),
            "dp.sampling_rate",
        ),
        (
            set(targeted(json!(0.5)), &[("/rounds", json!(0))]),
            "rounds must be",
        ),
    ] {
        let err = served.op.create_study(&typed(&req)).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    served.stop().await;
}
both_backends!(a_target_epsilon_is_calibrated_into_sigma, calibrates);

async fn plan_refusals(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let good = PrivacyPlanRequest {
        target_epsilon: 1.0,
        delta: 1e-5,
        sampling_rate: 0.1,
        steps_per_round: 10,
        rounds: 3,
    };
    type Change = fn(&mut PrivacyPlanRequest);
    let cases: [(&str, Change); 7] = [
        ("target_epsilon", |r| r.target_epsilon = 0.0),
        ("target_epsilon", |r| r.target_epsilon = -2.0),
        ("delta", |r| r.delta = 1.0),
        ("sampling_rate", |r| r.sampling_rate = 0.0),
        ("steps_per_round", |r| r.steps_per_round = 0),
        ("rounds", |r| r.rounds = 0),
        ("rounds", |r| r.rounds = 1_000_000),
    ];
    for (field, change) in cases {
        let mut req = good.clone();
        change(&mut req);
        let err = served.op.privacy_plan(&req).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // Unknown fields and a participant's (or no) credential are refused too.
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/privacy/plan", served.url))
        .bearer_auth(&served.op_token)
        .json(&json!({"target_epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.1, "steps_per_round": 10,
                      "rounds": 3, "accountant": "rdp"}))
        .send()
        .await
        .unwrap();
    assert!(raw.status().is_client_error(), "{}", raw.status());
    let err = served.base.privacy_plan(&good).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let plan = served.op.privacy_plan(&good).await.unwrap();
    assert!(
        plan.epsilon <= 1.0 && plan.noise_multiplier > 0.0,
        "{plan:?}"
    );
    assert_eq!(plan.request, good);
    // Documented in the OpenAPI description, with its request and answer types.
    let doc = served.op.openapi().await.unwrap();
    assert!(
        doc["paths"]["/v1/privacy/plan"]["post"].is_object(),
        "{doc}"
    );
    for schema in ["PrivacyPlanRequest", "PrivacyPlanResponse"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    served.stop().await;
}
both_backends!(the_planner_refuses_bad_input_by_name, plan_refusals);
