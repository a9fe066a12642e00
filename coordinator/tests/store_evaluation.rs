//! The store's evaluation operations against SQLite and Postgres: an evaluation round is created past a study's
//! rounds, completes with its charges in the evaluation part and its metrics stored for the evaluated version (no
//! new model version), and a version is evaluated once.

mod support;

use confide_common::api::{RoundPurpose, RoundStage};
use confide_common::dp::DataPartition;
use confide_coordinator::store::{
    Charge, NewEvaluation, NewRound, Publication, RoundRow, StoreError,
};
use support::{TestDb, new_round};

/// A study with two enrolled participants and a round that selected both: (study, p1, p2, round).
async fn study_with_round(db: &TestDb) -> (i64, i64, i64, RoundRow) {
    let s = &db.store;
    let study = s
        .create_study("s1", r#"{"k":1}"#, b"weights-v0")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["alpha", "beta"] {
        let (_, token) = s
            .create_enrolment_token(study.id, name, i64::MAX / 2)
            .await
            .unwrap();
        ids.push(s.enrol(&token, name, None).await.unwrap().0.id);
    }
    let round = s
        .create_round(&new_round(study.id, ids.clone()))
        .await
        .unwrap();
    (study.id, ids[0], ids[1], round)
}

/// An evaluation round: allowed once a study's rounds are all run (it does not count), completed with its charges
/// in the evaluation part and its metrics stored for the evaluated version, with no new model version; a version
/// is evaluated once.
async fn evaluation_publication(db: &TestDb) {
    let s = &db.store;
    let (study, p1, p2, round) = study_with_round(db).await;
    let charge = |participant, ledger_rows| Charge {
        participant,
        events: vec![confide_common::dp::PrivacyEvent::ZcdpGaussian { rho: 0.1 }],
        epsilon_after: 0.5,
        ledger_rows,
        partition: DataPartition::Evaluation,
    };
    // Two training rounds publish versions 1 and 2: max_rounds = 2 is reached.
    let mut round = round;
    for v in 1..=2 {
        let p = Publication {
            round_id: round.id,
            from_stage: RoundStage::AdvertiseKeys,
            weights: format!("weights-v{v}").into_bytes(),
            optimizer_state: None,
            completed: vec![p1, p2],
            charges: Vec::new(),
            statistics_json: None,
            evaluation: None,
        };
        assert_eq!(s.publish_round(&p).await.unwrap(), v);
        if v == 1 {
            round = s
                .create_round(&new_round(study, vec![p1, p2]))
                .await
                .unwrap();
        }
    }
    assert_eq!(s.completed_training_rounds(study).await.unwrap(), 2);
    assert!(matches!(
        s.create_round(&new_round(study, vec![p1])).await,
        Err(StoreError::Refused(_))
    ));
    let eval_round = NewRound {
        base_version: 2,
        purpose: RoundPurpose::Evaluation,
        ..new_round(study, vec![p1, p2])
    };
    let round = s.create_round(&eval_round).await.unwrap();
    assert_eq!(s.versions_with_evaluation_rounds(study).await.unwrap(), [2]);
    let evaluation = NewEvaluation {
        model_version: 2,
        training_rounds: 2,
        correct: 81.5,
        record_count: 90.25,
        loss_sum: 30.0,
        sites: 2,
        noise_std_per_site: 7.5,
        loss_max: 4.0,
        release_epsilon: 1.0,
        epsilon_spent: 0.5,
    };
    let p = Publication {
        round_id: round.id,
        from_stage: RoundStage::AdvertiseKeys,
        weights: Vec::new(),
        optimizer_state: None,
        completed: vec![p1, p2],
        charges: vec![charge(p1, 0), charge(p2, 0)],
        statistics_json: None,
        evaluation: Some(evaluation.clone()),
    };
    assert_eq!(
        s.publish_round(&p).await.unwrap(),
        2,
        "the evaluated version"
    );
    assert_eq!(
        s.latest_model_version(study).await.unwrap().version,
        2,
        "no new weights"
    );
    assert_eq!(
        s.completed_training_rounds(study).await.unwrap(),
        2,
        "evaluation is not training"
    );
    let rows = s.study_evaluations(study).await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.study_id, r.round_id, r.model_version, r.training_rounds),
        (study, round.id, 2, 2)
    );
    assert_eq!(
        (
            r.correct,
            r.record_count,
            r.loss_sum,
            r.sites,
            r.noise_std_per_site,
            r.loss_max,
            r.release_epsilon
        ),
        (81.5, 90.25, 30.0, 2, 7.5, 4.0, 1.0)
    );
    let ledger = s.ledger(study).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(
        ledger
            .iter()
            .all(|l| l.partition == DataPartition::Evaluation && l.round_id == round.id)
    );
    // The same version cannot be evaluated twice: nothing written.
    let again = s.create_round(&eval_round).await.unwrap();
    let before = s.state_fingerprint().await.unwrap();
    let p = Publication {
        round_id: again.id,
        charges: vec![charge(p1, 1)],
        ..p
    };
    assert!(matches!(
        s.publish_round(&p).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(before, s.state_fingerprint().await.unwrap());
}
both_backends!(
    an_evaluation_round_stores_metrics_and_no_model,
    evaluation_publication
);
