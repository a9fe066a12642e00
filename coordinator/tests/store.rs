//! Every Store operation against SQLite and Postgres.

mod support;

use confide_common::api::{BudgetParams, MemberSet, RoundOutcome, RoundStage, RunState};
use confide_common::dp::DataPartition;
use confide_coordinator::service::privacy::{self, PrivacyError};
use confide_coordinator::store::{
    Charge, NewRound, Publication, RoundRow, StageBoundary, StoreError,
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

async fn tokens_and_studies(db: &TestDb) {
    let s = &db.store;
    let tok = s.create_operator_token("ops").await.unwrap();
    assert_eq!(
        s.operator_for_token(&tok).await.unwrap().as_deref(),
        Some("ops")
    );
    assert_eq!(s.operator_for_token("nope").await.unwrap(), None);
    assert!(matches!(
        s.create_operator_token("ops").await,
        Err(StoreError::Conflict(_))
    ));

    let study = s
        .create_study("s1", r#"{"k":1}"#, b"weights-v0")
        .await
        .unwrap();
    assert!(matches!(
        s.create_study("s1", "{}", b"x").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_study(study.id).await.unwrap(), study);
    assert_eq!(s.list_studies().await.unwrap(), vec![study.clone()]);
    assert!(matches!(
        s.get_study(999).await,
        Err(StoreError::NotFound(_))
    ));
    let versions = s.list_model_versions(study.id).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].version, 0);
    assert_eq!(versions[0].size_bytes, 10);
    let (w, sha) = s.model_weights(study.id, 0).await.unwrap();
    assert_eq!(w, b"weights-v0");
    assert_eq!(sha, confide_coordinator::store::sha256_hex(b"weights-v0"));
    assert!(matches!(
        s.model_weights(study.id, 1).await,
        Err(StoreError::NotFound(_))
    ));
}
both_backends!(tokens_and_studies_work, tokens_and_studies);

async fn enrolment(db: &TestDb) {
    let s = &db.store;
    let study = s.create_study("s1", "{}", b"w").await.unwrap();
    let (_, tok) = s
        .create_enrolment_token(study.id, "hospital a", i64::MAX / 2)
        .await
        .unwrap();
    let (p, cred) = s.enrol(&tok, "alpha", None).await.unwrap();
    assert_eq!(p.study_id, study.id);
    assert_eq!(
        s.participant_for_credential(&cred).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(s.participant_for_credential(&tok).await.unwrap(), None);
    // one-time
    let before = s.state_fingerprint().await.unwrap();
    assert!(matches!(
        s.enrol(&tok, "again", None).await,
        Err(StoreError::Refused(_))
    ));
    // expired
    let (_, old) = s.create_enrolment_token(study.id, "old", 1).await.unwrap();
    let before2 = s.state_fingerprint().await.unwrap();
    assert_ne!(before, before2);
    assert!(matches!(
        s.enrol(&old, "late", None).await,
        Err(StoreError::Refused(_))
    ));
    // duplicate name rolls the token back
    let (_, tok2) = s
        .create_enrolment_token(study.id, "b", i64::MAX / 2)
        .await
        .unwrap();
    let before3 = s.state_fingerprint().await.unwrap();
    assert!(matches!(
        s.enrol(&tok2, "alpha", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(before3, s.state_fingerprint().await.unwrap());
    let (p2, _) = s.enrol(&tok2, "beta", None).await.unwrap();
    assert_eq!(s.list_participants(study.id).await.unwrap(), vec![p, p2]);
    assert!(matches!(
        s.create_enrolment_token(999, "x", 1).await,
        Err(StoreError::NotFound(_))
    ));
}
both_backends!(enrolment_is_one_time_and_atomic, enrolment);

/// Identity keys are stored with the participant and unique in a study (a refused enrolment stores nothing);
/// disabling keeps the first time and names an unknown participant; a round's exclusions are written with its
/// abort, and only then.
async fn identities_disabling_and_exclusions(db: &TestDb) {
    let s = &db.store;
    let (study, p1, p2, round) = study_with_round(db).await;
    let (_, tok) = s
        .create_enrolment_token(study, "keyed", i64::MAX / 2)
        .await
        .unwrap();
    let (p, _) = s.enrol(&tok, "keyed", Some(&[7u8; 32])).await.unwrap();
    assert_eq!(p.identity_key.as_deref(), Some(&[7u8; 32][..]));
    assert_eq!(p.disabled_at, None);
    let (_, tok2) = s
        .create_enrolment_token(study, "copy", i64::MAX / 2)
        .await
        .unwrap();
    let before = s.state_fingerprint().await.unwrap();
    assert!(matches!(
        s.enrol(&tok2, "copy", Some(&[7u8; 32])).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(before, s.state_fingerprint().await.unwrap());
    // In another study the same key is another participant's business.
    let other = s.create_study("s-other", "{}", b"w").await.unwrap();
    let (_, tok3) = s
        .create_enrolment_token(other.id, "x", i64::MAX / 2)
        .await
        .unwrap();
    assert!(s.enrol(&tok3, "keyed", Some(&[7u8; 32])).await.is_ok());

    let d = s.disable_participant(study, p1).await.unwrap();
    let first = d.disabled_at.expect("disabled");
    let again = s.disable_participant(study, p1).await.unwrap();
    assert_eq!(again.disabled_at, Some(first));
    assert!(matches!(
        s.disable_participant(other.id, p1).await,
        Err(StoreError::NotFound(_))
    ));
    let listed = s.list_participants(study).await.unwrap();
    assert_eq!(listed.iter().filter(|p| p.disabled_at.is_some()).count(), 1);

    assert!(s.round_exclusions(round.id).await.unwrap().is_empty());
    let why = vec![(p2, "dealt bad shares".to_string())];
    assert!(
        s.abort_round_excluding(round.id, "bad dealing", &why)
            .await
            .unwrap()
    );
    assert_eq!(s.round_exclusions(round.id).await.unwrap(), why);
    // A finished round is not aborted again, and its exclusions stay as they were.
    assert!(
        !s.abort_round_excluding(round.id, "again", &[(p1, "x".into())])
            .await
            .unwrap()
    );
    assert_eq!(s.round_exclusions(round.id).await.unwrap(), why);
}
both_backends!(
    identity_keys_disabling_and_round_exclusions,
    identities_disabling_and_exclusions
);

async fn round_lifecycle(db: &TestDb) {
    let s = &db.store;
    let (study, p1, p2, round) = study_with_round(db).await;
    assert_eq!(round.round_number, 1);
    assert_eq!(
        s.server_snapshot(round.id).await.unwrap().as_deref(),
        Some(&[1u8, 2, 3][..])
    );
    assert!(matches!(
        s.create_round(&new_round(study, vec![p1])).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.active_rounds().await.unwrap(), vec![round.clone()]);

    // leases
    let ttl = std::time::Duration::from_secs(30);
    assert!(s.acquire_round_lease(round.id, "a", ttl).await.unwrap());
    assert!(!s.acquire_round_lease(round.id, "b", ttl).await.unwrap());
    assert!(s.acquire_round_lease(round.id, "a", ttl).await.unwrap());
    s.release_round_lease(round.id, "a").await.unwrap();
    assert!(
        s.acquire_round_lease(round.id, "b", std::time::Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        s.acquire_round_lease(round.id, "a", ttl).await.unwrap(),
        "expired lease is taken over"
    );

    // messages: two accepted, then each refusal by kind
    use MemberSet::{Selected, SharedKeys};
    use RoundStage::{AdvertiseKeys, ShareKeys};
    let (r, none) = (round.id, 999);
    for (round, stage, set, participant, body, expected) in [
        (r, AdvertiseKeys, Selected, p1, &b"m1"[..], "stored"),
        (r, AdvertiseKeys, Selected, p1, b"m1b", "conflict"), // a second message
        (r, ShareKeys, Selected, p2, b"x", "conflict"),       // not the round's stage
        (r, AdvertiseKeys, SharedKeys, p2, b"x", "refused"),  // not in the set
        (none, AdvertiseKeys, Selected, p2, b"x", "not found"),
        (r, AdvertiseKeys, Selected, p2, b"m2", "stored"),
    ] {
        let got = match s.record_message(round, stage, set, participant, body).await {
            Ok(()) => "stored",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Refused(_)) => "refused",
            Err(StoreError::NotFound(_)) => "not found",
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            got, expected,
            "{stage:?} {set:?} from {participant} in round {round}"
        );
    }
    assert_eq!(
        s.stage_messages(round.id, RoundStage::AdvertiseKeys)
            .await
            .unwrap(),
        vec![(p1, b"m1".to_vec()), (p2, b"m2".to_vec())]
    );
    assert_eq!(
        s.stage_message_senders(round.id, RoundStage::AdvertiseKeys)
            .await
            .unwrap(),
        vec![p1, p2]
    );
    assert_eq!(
        s.stage_message(round.id, RoundStage::AdvertiseKeys, p2)
            .await
            .unwrap(),
        Some(b"m2".to_vec())
    );
    assert_eq!(
        s.stage_message(round.id, RoundStage::ShareKeys, p2)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.sent_in_stage(round.id, RoundStage::AdvertiseKeys, p1)
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        s.sent_in_stage(round.id, RoundStage::AdvertiseKeys, p2 + 100)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        s.sent_in_stage(round.id, RoundStage::ShareKeys, p1)
            .await
            .unwrap(),
        None,
        "not the round's stage"
    );

    // stage boundary
    let t = StageBoundary {
        round_id: round.id,
        from_stage: RoundStage::AdvertiseKeys,
        to_stage: RoundStage::ShareKeys,
        server_state: vec![9],
        stage_deadline: 123,
        completed: vec![p1, p2],
        broadcasts: vec![(0, b"all".to_vec()), (p2, b"for p2".to_vec())],
        exclusions: vec![(p2, "bad commitments".into())],
    };
    assert!(s.advance_stage(&t).await.unwrap());
    assert!(!s.advance_stage(&t).await.unwrap(), "a stage closes once");
    assert_eq!(
        s.round_exclusions(round.id).await.unwrap(),
        vec![(p2, "bad commitments".to_string())],
        "exclusions are written with the stage boundary"
    );
    let r = s.get_round(round.id).await.unwrap();
    assert_eq!((r.stage, r.stage_deadline), (RoundStage::ShareKeys, 123));
    assert_eq!(
        s.server_snapshot(round.id).await.unwrap().as_deref(),
        Some(&[9u8][..])
    );
    assert!(
        s.stage_messages(round.id, RoundStage::AdvertiseKeys)
            .await
            .unwrap()
            .is_empty(),
        "a closed stage's messages are deleted with the boundary: the snapshot holds them"
    );
    assert_eq!(
        s.broadcasts(round.id, RoundStage::ShareKeys, p1)
            .await
            .unwrap(),
        vec![b"all".to_vec()]
    );
    assert_eq!(
        s.broadcasts(round.id, RoundStage::ShareKeys, p2)
            .await
            .unwrap(),
        vec![b"all".to_vec(), b"for p2".to_vec()]
    );
    let members = s.round_members(round.id).await.unwrap();
    assert_eq!(
        members
            .iter()
            .filter(|(set, _)| *set == MemberSet::AdvertisedKeys)
            .count(),
        2
    );
    assert_eq!(
        members
            .iter()
            .filter(|(set, _)| *set == MemberSet::Selected)
            .count(),
        2
    );

    // abort: nothing published, nothing charged; the next round may start
    s.record_message(
        round.id,
        RoundStage::ShareKeys,
        MemberSet::AdvertisedKeys,
        p1,
        b"s1",
    )
    .await
    .unwrap();
    assert!(s.abort_round(round.id, "operator").await.unwrap());
    assert!(!s.abort_round(round.id, "again").await.unwrap());
    let r = s.get_round(round.id).await.unwrap();
    assert_eq!(
        (r.outcome, r.reason.as_deref()),
        (Some(RoundOutcome::Aborted), Some("operator"))
    );
    assert!(
        s.stage_messages(round.id, RoundStage::ShareKeys)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.server_snapshot(round.id).await.unwrap(),
        None,
        "a finished round keeps no server state"
    );
    assert!(s.active_rounds().await.unwrap().is_empty());
    assert_eq!(s.list_model_versions(study).await.unwrap().len(), 1);
    assert!(s.ledger(study).await.unwrap().is_empty());
    assert!(
        !s.acquire_round_lease(round.id, "a", ttl).await.unwrap(),
        "finished rounds are not driven"
    );
    let r2 = s
        .create_round(&new_round(study, vec![p1, p2]))
        .await
        .unwrap();
    assert_eq!(r2.round_number, 2);
    assert_eq!(s.list_rounds(study).await.unwrap().len(), 2);
    assert_eq!(
        s.round_outcome_counts().await.unwrap(),
        vec![(study, RoundOutcome::Aborted, 1)]
    );
}
both_backends!(round_lifecycle_works, round_lifecycle);

async fn publish(db: &TestDb) {
    let s = &db.store;
    let (study, p1, p2, round) = study_with_round(db).await;
    let events = vec![confide_common::dp::PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.1,
        noise_multiplier: 1.0,
        steps: 10,
    }];
    let charge = |epsilon_after: f64, ledger_rows: i64| Charge {
        participant: p1,
        events: events.clone(),
        epsilon_after,
        ledger_rows,
        partition: DataPartition::Training,
    };
    let p = Publication {
        round_id: round.id,
        from_stage: RoundStage::Unmasking,
        weights: b"weights-v1".to_vec(),
        optimizer_state: Some(b"adam".to_vec()),
        completed: vec![p1],
        charges: vec![charge(1.0, 0)],
        statistics_json: Some(r#"{"published":"stats"}"#.into()),
        evaluation: None,
    };
    // wrong stage: nothing written
    let before = s.state_fingerprint().await.unwrap();
    assert!(matches!(
        s.publish_round(&p).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(before, s.state_fingerprint().await.unwrap());
    let p = Publication {
        from_stage: RoundStage::AdvertiseKeys,
        ..p
    };
    // the privacy service refuses a charge over the budget before the store writes anything
    let tight = BudgetParams {
        epsilon: 1e-3,
        delta: 1e-5,
    };
    let over = Publication {
        charges: Vec::new(),
        ..p.clone()
    };
    let tagged = privacy::tagged(DataPartition::Training, &events);
    match privacy::publish_with_charges(s, over, study, &[p1], &tagged, &tight).await {
        Err(PrivacyError::OverBudget(msg)) => assert!(msg.contains("> budget 0.001"), "{msg}"),
        Err(e) => panic!("expected refusal, got {e:?}"),
        Ok(v) => panic!("expected refusal, got version {v}"),
    }
    assert_eq!(before, s.state_fingerprint().await.unwrap());
    // ε computed from a ledger that is not the stored one (here: one entry that does not exist) is stale
    let stale = Publication {
        charges: vec![charge(1.0, 1)],
        ..p.clone()
    };
    assert!(matches!(
        s.publish_round(&stale).await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(before, s.state_fingerprint().await.unwrap());
    assert_eq!(s.publish_round(&p).await.unwrap(), 1);
    assert!(
        matches!(s.publish_round(&p).await, Err(StoreError::Conflict(_))),
        "published once"
    );
    let ledger = s.ledger(study).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (
            ledger[0].participant_id,
            ledger[0].round_id,
            ledger[0].epsilon_after
        ),
        (p1, round.id, 1.0)
    );
    assert_eq!(ledger[0].events, events);
    assert_eq!(ledger[0].partition, DataPartition::Training);
    let (w, _) = s.model_weights(study, 1).await.unwrap();
    assert_eq!(w, b"weights-v1");
    assert_eq!(
        s.latest_model_version(study).await.unwrap().round_id,
        Some(round.id)
    );
    assert_eq!(
        s.optimizer_state(study, 1).await.unwrap(),
        Some(b"adam".to_vec())
    );
    assert_eq!(s.optimizer_state(study, 0).await.unwrap(), None);
    let r = s.get_round(round.id).await.unwrap();
    assert_eq!(r.outcome, Some(RoundOutcome::Completed));
    // the next round's charge is checked against the ledger that now has one entry
    let round2 = s
        .create_round(&new_round(study, vec![p1, p2]))
        .await
        .unwrap();
    let p = Publication {
        round_id: round2.id,
        ..p
    };
    assert!(matches!(
        s.publish_round(&p).await,
        Err(StoreError::Stale(_))
    ));
    let p = Publication {
        charges: vec![charge(2.0, 1)],
        ..p
    };
    let p = Publication {
        statistics_json: None,
        ..p
    };
    assert_eq!(s.publish_round(&p).await.unwrap(), 2);
    assert_eq!(s.ledger(study).await.unwrap()[1].epsilon_after, 2.0);
    // Statistics published with version 1 are carried on to every later version; version 0 has none.
    let statistics: Vec<Option<String>> = s
        .list_model_versions(study)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.statistics_json)
        .collect();
    let published = Some(r#"{"published":"stats"}"#.to_string());
    assert_eq!(statistics, [None, published.clone(), published]);
    // max_rounds = 2 reached
    assert!(matches!(
        s.create_round(&new_round(study, vec![p1])).await,
        Err(StoreError::Refused(_))
    ));
}
both_backends!(publish_is_one_transaction, publish);

/// A database migrated by the coordinator before `sqlx::migrate!` (a hand-listed `Migrator` of the same files, the
/// same versions, names and checksums) opens without error: existing deployments keep their databases.
#[tokio::test]
async fn databases_migrated_by_the_hand_listed_migrator_still_open() {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = Migrator::with_migrations(
        [
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "round_declines",
                include_str!("../../migrations/sqlite/0002_round_declines.sql"),
            ),
        ]
        .into_iter()
        .map(|(version, name, sql)| {
            Migration::new(
                version,
                name.into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect(),
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    old.run(&pool).await.unwrap();
    pool.close().await;
    let store = confide_coordinator::Store::connect(&format!("sqlite:{}", path.display()), None)
        .await
        .expect("the embedded migrations accept the old migration history");
    store.close().await;
}

/// A study's run: started once, its next round created only under the guard (running, last round as seen), ended
/// once; last-seen times only move forwards.
async fn study_runs(db: &TestDb) {
    let s = &db.store;
    let (study, p1, _, round) = study_with_round(db).await;
    let fresh = s.study_run(study).await.unwrap();
    assert_eq!((fresh.state, fresh.schedule_json), (None, None));
    let run = s
        .start_study_run(study, r#"{"kind":"manual"}"#)
        .await
        .unwrap();
    assert_eq!(run.state, Some(RunState::Running));
    assert_eq!(run.after_round, Some(1), "round 1 exists already");
    assert!(matches!(
        s.start_study_run(study, "{}").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.start_study_run(study + 100, "{}").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.running_studies().await.unwrap(), [study]);
    assert!(s.abort_round(round.id, "test").await.unwrap());
    let guarded = |last| NewRound {
        run_guard: Some(last),
        ..new_round(study, vec![p1])
    };
    // A process that saw round 0 as the last is too late; one that saw round 1 starts round 2, once.
    assert!(matches!(
        s.create_round(&guarded(0)).await,
        Err(StoreError::Conflict(_))
    ));
    let second = s.create_round(&guarded(1)).await.unwrap();
    assert_eq!(second.round_number, 2);
    assert!(s.abort_round(second.id, "test").await.unwrap());
    s.set_run_reason(study, Some("waiting")).await.unwrap();
    assert_eq!(
        s.study_run(study).await.unwrap().reason.as_deref(),
        Some("waiting")
    );
    assert!(
        s.end_study_run(study, RunState::Stopped, "stop")
            .await
            .unwrap()
    );
    assert!(
        !s.end_study_run(study, RunState::Failed, "late")
            .await
            .unwrap()
    );
    let ended = s.study_run(study).await.unwrap();
    assert_eq!(ended.state, Some(RunState::Stopped));
    assert_eq!(ended.reason.as_deref(), Some("stop"));
    assert!(ended.ended_at.is_some());
    // A stopped run starts no round even under the right guard; reasons of ended runs stay.
    assert!(matches!(
        s.create_round(&guarded(2)).await,
        Err(StoreError::Conflict(_))
    ));
    s.set_run_reason(study, None).await.unwrap();
    assert_eq!(
        s.study_run(study).await.unwrap().reason.as_deref(),
        Some("stop")
    );
    assert!(s.running_studies().await.unwrap().is_empty());
    s.touch_participant(p1, 2_000).await.unwrap();
    s.touch_participant(p1, 1_000).await.unwrap();
    let seen = s.list_participants(study).await.unwrap();
    assert_eq!(seen[0].last_seen_at, Some(2_000));
    assert_eq!(seen[1].last_seen_at, None);
}

both_backends!(study_runs_are_guarded, study_runs);
