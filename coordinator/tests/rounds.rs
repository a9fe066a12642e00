//! Whole rounds over real HTTP against an in-process coordinator: simulated participants run the sans-IO
//! secure-aggregation client; the published model must equal FedAvg of exactly the aggregated inputs, and exactly
//! those participants are charged.

mod support;

use std::time::{Duration, Instant};

use confide_common::api::{MemberSet, RoundInfo, RoundOutcome, RoundStage, StartRoundRequest};
use confide_common::dp::{AccountantKind, PrivacyLedger};
use confide_common::model::{ModelSpec, decode_safetensors};
use confide_common::secagg::QuantizationParams;
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::sim::{Sim, enrol_sims};
use support::{Served, TestDb, set, start_round, study_request, typed};

/// Learning rate of the studies here (FedAvg).
const LR: f64 = 0.5;

fn request(name: &str, masked_input_secs: u64) -> Value {
    set(
        study_request(name),
        &[
            ("/secagg/threat_model", json!("malicious")),
            ("/initial_weights_seed", json!(11)),
            ("/secagg/quantisation/max_weight", json!(1000)),
            ("/deadlines/masked_input_secs", json!(masked_input_secs)),
            // A participant that stops after ShareKeys is missed here in malicious-model rounds.
            (
                "/deadlines/share_verification_secs",
                json!(masked_input_secs),
            ),
            ("/server_optimizer/learning_rate", json!(LR)),
        ],
    )
}

/// The model FedAvg must publish from these inputs.
fn expected_model(base: &[f32], q: &QuantizationParams, inputs: &[&Vec<u32>]) -> Vec<f32> {
    support::fedavg(base, q, inputs, LR)
}

/// A study with `n` simulated participants (each with weight 1, as the agents send).
async fn setup(served: &Served, req: &Value, n: usize) -> (i64, Vec<Sim>) {
    let sid = served.create_study(req).await;
    let update = |i: usize, j: usize| ((i * 8 + j) as f32 * 0.37).sin() * 0.5;
    let sims = enrol_sims(&served.op, &served.base, sid, n, update, |_| 1).await;
    (sid, sims)
}

/// Runs the simulated participants until the round finishes; `drop_after_share_keys` stop answering once their
/// task is past ShareKeys. Returns the round's status.
async fn run_round(
    served: &Served,
    sims: &mut [Sim],
    rid: i64,
    drop_after_share_keys: &[usize],
) -> RoundInfo {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, s) in sims.iter_mut().enumerate() {
            let task = s.task(&served.base).await;
            let dropped = drop_after_share_keys.contains(&i)
                && task.as_ref().is_some_and(|t| {
                    t.stage != RoundStage::AdvertiseKeys && t.stage != RoundStage::ShareKeys
                });
            if !dropped {
                s.step(&served.base).await;
            }
        }
        let status = served.op.get_round(rid).await.unwrap();
        if status.outcome.is_some() {
            return status;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for round {rid}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn full_rounds(db: &TestDb, threat_model: &str) {
    let limits = Limits {
        lease_ttl: Duration::from_secs(2),
        ..Limits::default()
    };
    let served = Served::start(db, limits).await;
    let malicious = threat_model == "malicious";
    let req = set(
        request("e2e", 3),
        &[("/secagg/threat_model", json!(threat_model))],
    );
    let (sid, mut sims) = setup(&served, &req, 4).await;
    let spec = ModelSpec::from_json(&request("x", 1)["model_spec"].to_string()).unwrap();

    // Round 1: everyone takes part.
    let rid = start_round(&served.op, sid).await;
    let q = sims[0].task(&served.base).await.unwrap().quantisation;
    let status = run_round(&served, &mut sims, rid, &[]).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
    for set in MemberSet::ALL {
        let in_model =
            malicious || !matches!(set, MemberSet::VerifiedShares | MemberSet::SignedSurvivors);
        let expected = if in_model { 4 } else { 0 };
        assert_eq!(status.members(set).len(), expected, "{set:?}: {status:?}");
    }
    let (base, _) = db.store.model_weights(sid, 0).await.unwrap();
    let base = decode_safetensors(&spec, &base).unwrap();
    let inputs: Vec<&Vec<u32>> = sims
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    let expected = expected_model(&base, &q, &inputs);
    let v1 = served.op.download_model_version(sid, 1).await.unwrap();
    assert_eq!(
        decode_safetensors(&spec, &v1.bytes).unwrap(),
        expected,
        "published model is FedAvg of the inputs"
    );
    // and it is close to the plain weighted mean of the real updates (quantisation error only)
    let total: f32 = sims.iter().map(|s| s.weight as f32).sum();
    for (j, x) in expected.iter().enumerate() {
        let mean: f32 = sims
            .iter()
            .map(|s| s.weight as f32 * s.update[j])
            .sum::<f32>()
            / total;
        assert!(
            (x - (base[j] + LR as f32 * mean)).abs() < 1e-4,
            "coordinate {j}"
        );
    }
    let ledger = db.store.ledger(sid).await.unwrap();
    assert_eq!(
        ledger.iter().map(|l| l.participant_id).collect::<Vec<_>>(),
        sims.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    let report = served.op.privacy_report(sid).await.unwrap();
    let eps = report.participants[0].epsilon_spent;
    assert!(eps > 0.0 && eps < 10.0, "{report:?}");

    // Round 2: the last participant drops after ShareKeys; the round completes with the three survivors, who alone
    // are charged.
    let rid2 = start_round(&served.op, sid).await;
    for s in sims.iter_mut() {
        s.sent_input = None;
    }
    let status = run_round(&served, &mut sims, rid2, &[3]).await;
    assert_eq!(status.outcome, Some(RoundOutcome::Completed), "{status:?}");
    assert!(sims[3].sent_input.is_none());
    let v1 = decode_safetensors(&spec, &v1.bytes).unwrap();
    let inputs: Vec<&Vec<u32>> = sims[..3]
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    let v2 = served.op.download_model_version(sid, 2).await.unwrap();
    assert_eq!(
        decode_safetensors(&spec, &v2.bytes).unwrap(),
        expected_model(&v1, &q, &inputs)
    );
    let ledger = db.store.ledger(sid).await.unwrap();
    let charged: Vec<i64> = ledger
        .iter()
        .filter(|l| l.round_id == rid2)
        .map(|l| l.participant_id)
        .collect();
    assert_eq!(charged, vec![sims[0].id, sims[1].id, sims[2].id]);
    let metrics = served.base.metrics().await.unwrap();
    // The dropout is counted in the stage after ShareKeys.
    let after_share_keys = if malicious {
        "share_verification"
    } else {
        "masked_input_collection"
    };
    for line in [
        format!(
            "confide_participant_dropouts_total{{stage=\"{after_share_keys}\",study=\"{sid}\"}} 1"
        ),
        format!("confide_rounds_total{{outcome=\"completed\",study=\"{sid}\"}} 2"),
        "confide_privacy_epsilon_spent{".into(),
        "confide_round_stage_duration_seconds_bucket".into(),
        "confide_db_transactions_total{name=\"publish_round\",outcome=\"committed\"} 2".into(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    served.stop().await;
}
async fn full_malicious_rounds(db: &TestDb) {
    full_rounds(db, "malicious").await
}
async fn full_semi_honest_rounds(db: &TestDb) {
    full_rounds(db, "semi_honest").await
}
both_backends!(
    malicious_rounds_publish_fedavg_and_charge_exactly_the_aggregated,
    full_malicious_rounds
);
both_backends!(
    semi_honest_rounds_publish_fedavg_and_charge_exactly_the_aggregated,
    full_semi_honest_rounds
);

/// A participant that puts weight 2 in its input's weight coordinate (to count twice in the mean): the aggregate's
/// weight (4) differs from the number of inputs (3), so the round is aborted — nothing published, nobody charged.
/// And a sparse graph is refused for a malicious-model study, with what to do.
async fn bad_weight(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let before = db.store.state_fingerprint().await.unwrap();
    let sparse = set(
        request("sparse", 5),
        &[(
            "/secagg/graph",
            json!({"kind": "sparse", "expected_dropout": 0.1, "corrupt_fraction": 0.05}),
        )],
    );
    let err = served.op.create_study(&typed(&sparse)).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("sparse") && msg.contains("malicious") && msg.contains("complete"),
        "{msg}"
    );
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());

    let (sid, mut sims) = setup(&served, &request("weights", 5), 3).await;
    sims[1].weight = 2;
    let rid = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut sims, rid, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Aborted), "{done:?}");
    let reason = done.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("weight coordinate is 4") && reason.contains("3 inputs"),
        "{reason}"
    );
    assert!(
        db.store.ledger(sid).await.unwrap().is_empty(),
        "nobody charged"
    );
    assert!(
        db.store.model_weights(sid, 1).await.is_err(),
        "nothing published"
    );
    served.stop().await;
}
both_backends!(
    an_input_with_weight_other_than_one_aborts_the_round,
    bad_weight
);

/// A dealer that deals a bad share (signed, so attributable): the holder complains with proof at share
/// verification, the round aborts before anyone masks, and the dealer is listed in the round's exclusions. The
/// operator disables it (its ledger stays); it is no longer selected and the others' next round completes. The
/// operator sees every participant's identity fingerprint; an identity key cannot be registered twice.
async fn bad_dealer(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let (sid, mut sims) = setup(&served, &request("dealer", 5), 4).await;
    let listed = served.op.list_participants(sid).await.unwrap();
    for (p, s) in listed.iter().zip(&sims) {
        assert_eq!(
            p.identity_fingerprint.as_deref(),
            Some(s.identity.public().fingerprint().as_str())
        );
        assert!(!p.disabled);
    }
    // Another site registering a key already taken: refused, nothing stored.
    let token = served
        .op
        .create_enrolment_token(
            sid,
            &confide_common::api::CreateEnrolmentTokenRequest {
                label: "copycat".into(),
                expires_in_secs: None,
            },
        )
        .await
        .unwrap()
        .token;
    let err = served
        .base
        .enrol_with_identity(&token, "copycat", Some(sims[0].identity.public()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("identity key"), "{err}");
    assert_eq!(served.op.list_participants(sid).await.unwrap().len(), 4);

    // Round 1: everyone honest.
    let r1 = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut sims, r1, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Completed), "{done:?}");
    // Round 2: the last one deals a bad share.
    sims[3].corrupt_dealing = true;
    let r2 = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut sims, r2, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Aborted), "{done:?}");
    assert!(
        done.reason
            .as_deref()
            .unwrap_or_default()
            .contains("dealt inconsistent shares"),
        "{done:?}"
    );
    assert!(
        done.members(MemberSet::SentMaskedInput).is_empty(),
        "nobody masked"
    );
    let cheater = sims[3].id;
    let excluded = done
        .excluded
        .iter()
        .find(|e| e.participant_id == cheater)
        .unwrap_or_else(|| panic!("the bad dealer is excluded: {done:?}"));
    assert!(excluded.reason.contains("dealt shares"), "{excluded:?}");
    assert_eq!(done.excluded.len(), 1, "{done:?}");
    // The operator disables it; twice is fine; an unknown participant is 404.
    let info = served.op.disable_participant(sid, cheater).await.unwrap();
    assert!(info.disabled);
    assert!(
        served
            .op
            .disable_participant(sid, cheater)
            .await
            .unwrap()
            .disabled
    );
    let err = served
        .op
        .disable_participant(sid, 999_999)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    // Round 3: the three others only.
    let mut honest: Vec<Sim> = sims.drain(..3).collect();
    let r3 = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut honest, r3, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Completed), "{done:?}");
    assert_eq!(done.members(MemberSet::Selected).len(), 3);
    assert!(
        done.excluded
            .iter()
            .any(|e| e.participant_id == cheater && e.reason.contains("disabled")),
        "{done:?}"
    );
    // Its ledger stays: charged for round 1 only.
    let report = served.op.privacy_report(sid).await.unwrap();
    let p = report
        .participants
        .iter()
        .find(|p| p.participant_id == cheater)
        .unwrap();
    assert_eq!(p.rounds_charged, 1, "{report:?}");
    served.stop().await;
}
both_backends!(
    a_bad_dealer_is_named_excluded_and_can_be_disabled,
    bad_dealer
);

/// A dealer whose commitments are not on one polynomial: the coordinator's degree test drops its dealing when
/// ShareKeys closes (nobody sees its shares), the round completes with the others, and the dealer is named in the
/// round's exclusions.
async fn bad_commitments(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let (sid, mut sims) = setup(&served, &request("commitments", 5), 4).await;
    sims[3].bad_commitments = true;
    let rid = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut sims, rid, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Completed), "{done:?}");
    let cheater = sims[3].id;
    assert!(
        !done.members(MemberSet::SharedKeys).contains(&cheater),
        "{done:?}"
    );
    assert_eq!(
        done.members(MemberSet::SentMaskedInput).len(),
        3,
        "{done:?}"
    );
    let excluded: Vec<_> = done.excluded.iter().map(|e| e.participant_id).collect();
    assert_eq!(excluded, vec![cheater], "{done:?}");
    assert!(done.excluded[0].reason.contains("degree test"), "{done:?}");
    served.stop().await;
}
both_backends!(
    commitments_off_their_polynomial_drop_the_dealer_and_the_round_goes_on,
    bad_commitments
);

async fn budgets(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    let op = &served.op;

    // A budget below one round's cost: the study itself is refused, with the reason, and nothing is stored. So is
    // a noise multiplier so small that an accountant with a grid overflow reported ε = 0.
    let before = db.store.state_fingerprint().await.unwrap();
    for (req, needle) in [
        (
            set(request("tight", 5), &[("/budget/epsilon", json!(0.01))]),
            "one round of this study alone",
        ),
        (
            set(
                request("tiny-sigma", 5),
                &[
                    ("/dp/noise_multiplier", json!(3e-5)),
                    ("/dp/sampling_rate", json!(1.0)),
                ],
            ),
            "",
        ),
    ] {
        let err = match op.create_study(&typed(&req)).await {
            Err(e) => e,
            Ok(study) => panic!("{} was accepted: {study:?}", req["name"]),
        };
        assert_eq!(err.status(), Some(422), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }

    // A budget just above one round: round 1 runs, round 2 is refused at selection with the reasons.
    let one_round = PrivacyLedger {
        events: confide_common::plan::planned_events(&typed(&request("x", 5)).dp),
    }
    .epsilon(1e-5, AccountantKind::Pld)
    .unwrap();
    let req = set(
        request("one-round", 5),
        &[("/budget/epsilon", json!(one_round * 1.01))],
    );
    let (sid, mut sims) = setup(&served, &req, 3).await;
    let rid = start_round(op, sid).await;
    let done = run_round(&served, &mut sims, rid, &[]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Completed), "{done:?}");
    let before = db.store.state_fingerprint().await.unwrap();
    let err = op
        .start_round(sid, &StartRoundRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("round refused") && msg.contains("over its budget"),
        "{msg}"
    );
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    served.stop().await;
}
both_backends!(over_budget_participants_are_not_selected, budgets);

/// The minimum-aggregate rule: a study with min_participants 3 whose third participant drops after ShareKeys
/// aborts the round before unmasking — nothing published, nobody charged, the reason shown.
async fn min_aggregate(db: &TestDb) {
    let served = Served::start(db, Limits::default()).await;
    // min_participants 2 is refused outright.
    let pair = set(request("pair", 1), &[("/min_participants", json!(2))]);
    let err = served.op.create_study(&typed(&pair)).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(err.to_string().contains("min_participants"), "{err}");

    // Semi-honest (threshold 2 of 3): the coordinator's own rule, not the protocol's threshold, must stop it.
    let three = set(
        request("three", 1),
        &[("/secagg/threat_model", json!("semi_honest"))],
    );
    let (sid, mut sims) = setup(&served, &three, 3).await;
    let rid = start_round(&served.op, sid).await;
    let done = run_round(&served, &mut sims, rid, &[2]).await;
    assert_eq!(done.outcome, Some(RoundOutcome::Aborted), "{done:?}");
    let reason = done.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("only 2 participant(s) completed masked_input_collection"),
        "{reason}"
    );
    // The coordinator never asked for unmasking shares: it did not learn the sum of the two inputs.
    assert!(
        !done.sets.iter().any(|s| s.stage == MemberSet::Unmasked),
        "{done:?}"
    );
    assert!(db.store.ledger(sid).await.unwrap().is_empty());
    assert!(db.store.model_weights(sid, 1).await.is_err());
    served.stop().await;
}
both_backends!(
    a_round_of_fewer_than_three_inputs_publishes_nothing,
    min_aggregate
);

/// A server snapshot that does not decode when a driver resumes the round: the round is aborted with the reason,
/// nothing is published, nobody is charged, and its messages are gone.
async fn corrupt_snapshot(db: &TestDb) {
    let limits = Limits {
        lease_ttl: Duration::from_secs(2),
        ..Limits::default()
    };
    let served = Served::start(db, limits.clone()).await;
    let (sid, mut sims) = setup(&served, &request("corrupt", 60), 3).await;
    let rid = start_round(&served.op, sid).await;
    // Everyone advertises and shares keys; one masked input arrives.
    let until = Instant::now() + Duration::from_secs(30);
    while db.store.get_round(rid).await.unwrap().stage != RoundStage::MaskedInputCollection {
        for s in sims.iter_mut() {
            s.step_before(&served.base, RoundStage::MaskedInputCollection)
                .await;
        }
        assert!(
            Instant::now() < until,
            "round did not reach masked_input_collection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sims[0].step(&served.base).await,
        Some(RoundStage::MaskedInputCollection)
    );
    let stored = |db: &TestDb| {
        let store = db.store.clone();
        async move {
            store
                .stage_messages(rid, RoundStage::MaskedInputCollection)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(stored(db).await, 1);
    // The process stops (releasing the lease); the snapshot is damaged; a new process resumes the round.
    served.stop().await;
    let snapshot = db.store.server_snapshot(rid).await.unwrap().unwrap();
    support::overwrite_server_snapshot(db, rid, &snapshot[..snapshot.len() / 2]).await;
    let state = confide_coordinator::start(db.store.clone(), limits)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let round = loop {
        let r = db.store.get_round(rid).await.unwrap();
        if r.outcome.is_some() {
            break r;
        }
        assert!(Instant::now() < until, "round was not aborted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(round.outcome, Some(RoundOutcome::Aborted));
    let reason = round.reason.unwrap_or_default();
    assert!(
        reason.contains("cannot resume the round") && reason.contains("snapshot is unreadable"),
        "{reason}"
    );
    assert_eq!(
        db.store.list_model_versions(sid).await.unwrap().len(),
        1,
        "nothing published"
    );
    assert!(
        db.store.ledger(sid).await.unwrap().is_empty(),
        "nobody charged"
    );
    assert_eq!(stored(db).await, 0);
    assert_eq!(db.store.server_snapshot(rid).await.unwrap(), None);
    let metrics = state.metrics.render().unwrap();
    assert!(
        metrics.contains(&format!(
            "confide_rounds_total{{outcome=\"aborted\",study=\"{sid}\"}} 1"
        )),
        "{metrics}"
    );
    state.shutdown.cancel();
}
both_backends!(
    a_corrupt_snapshot_aborts_the_round_cleanly,
    corrupt_snapshot
);
