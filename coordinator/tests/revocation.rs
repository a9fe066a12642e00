//! Revocation of operator tokens, enrolment tokens and participants' credentials, on SQLite and Postgres: refused
//! at once (401) by every coordinator sharing the database — a second coordinator with its own connection pool
//! sees the revocation without any cache of its own — and enrolment tokens spent at most once under concurrency.

mod support;

use confide_common::api::CreateEnrolmentTokenRequest;
use confide_coordinator::Limits;
use confide_coordinator::store::StoreError;
use support::{Served, TestDb, study_request};

async fn store_revocation(db: &TestDb) {
    let s = &db.store;
    // Operator tokens: listed without secrets, revoked by name, refused at once.
    let tok = s.create_operator_token("ops").await.unwrap();
    s.create_operator_token("other").await.unwrap();
    assert_eq!(
        s.operator_for_token(&tok).await.unwrap().as_deref(),
        Some("ops")
    );
    s.revoke_operator_token("ops").await.unwrap();
    assert_eq!(s.operator_for_token(&tok).await.unwrap(), None);
    let listed = s.list_operator_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    let first = listed[0].revoked_at.expect("revoked");
    assert!(listed[1].revoked_at.is_none());
    s.revoke_operator_token("ops").await.unwrap();
    assert_eq!(
        s.list_operator_tokens().await.unwrap()[0].revoked_at,
        Some(first),
        "first time kept"
    );
    assert!(matches!(
        s.revoke_operator_token("nobody").await,
        Err(StoreError::NotFound(_))
    ));

    // Enrolment tokens: an unused one is revoked and cannot enrol; a used one cannot be revoked.
    let study = s.create_study("s1", "{}", b"w").await.unwrap();
    let (unused_id, unused) = s
        .create_enrolment_token(study.id, "a", i64::MAX / 2)
        .await
        .unwrap();
    let (used_id, used) = s
        .create_enrolment_token(study.id, "b", i64::MAX / 2)
        .await
        .unwrap();
    let (p, cred) = s.enrol(&used, "beta", None).await.unwrap();
    let row = s.revoke_enrolment_token(study.id, unused_id).await.unwrap();
    assert!(row.revoked_at.is_some() && row.used_at.is_none());
    let before = s.state_fingerprint().await.unwrap();
    assert!(matches!(
        s.enrol(&unused, "alpha", None).await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        s.revoke_enrolment_token(study.id, used_id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.revoke_enrolment_token(study.id + 1, unused_id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        before,
        s.state_fingerprint().await.unwrap(),
        "refusals change nothing"
    );
    let tokens = s.list_enrolment_tokens(study.id).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].participant_id, Some(p.id));

    // Participants: revoked credential refused; listed with the time; other studies' ids not found.
    assert!(s.participant_for_credential(&cred).await.unwrap().is_some());
    let revoked = s.revoke_participant(study.id, p.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(s.participant_for_credential(&cred).await.unwrap(), None);
    assert_eq!(s.list_participants(study.id).await.unwrap(), vec![revoked]);
    assert!(matches!(
        s.revoke_participant(study.id + 1, p.id).await,
        Err(StoreError::NotFound(_))
    ));
}
both_backends!(store_revocation_works, store_revocation);

async fn concurrent_enrolment(db: &TestDb) {
    let s = &db.store;
    let study = s.create_study("s1", "{}", b"w").await.unwrap();
    let (_, token) = s
        .create_enrolment_token(study.id, "a", i64::MAX / 2)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (s, token) = (s.clone(), token.clone());
        tasks.spawn(async move { s.enrol(&token, &format!("site-{i}"), None).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Refused(_)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, refused), (1, 11));
    assert_eq!(s.list_participants(study.id).await.unwrap().len(), 1);
}
both_backends!(
    an_enrolment_token_is_spent_once_under_concurrency,
    concurrent_enrolment
);

/// Two coordinators on one database, each with its own connection pool: what one revokes, the other refuses.
async fn revocation_across_processes(db: &TestDb) {
    let a = Served::start(db, Limits::default()).await;
    let other_db = db.another_connection().await;
    let b = Served::start(&other_db, Limits::default()).await;
    let study = a.create_study(&study_request("revocation")).await;
    let (pid, cred) = a.enrol(study, "alpha").await;
    let at_b = b.base.with_token(&cred);
    at_b.poll_task(0).await.expect("valid credential at B");
    // Revoke at A; refused at B at once.
    let info = a.op.revoke_participant(study, pid).await.unwrap();
    assert!(info.revoked_at_ms.is_some());
    let e = at_b.poll_task(0).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    // A revoked participant is not selected.
    let listed = b.op.list_participants(study).await.unwrap();
    assert!(listed[0].revoked_at_ms.is_some());
    // Enrolment tokens: listed, revoked at A, refused at B.
    let created =
        a.op.create_enrolment_token(
            study,
            &CreateEnrolmentTokenRequest {
                label: "beta".into(),
                expires_in_secs: None,
            },
        )
        .await
        .unwrap();
    let listed = b.op.list_enrolment_tokens(study).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t.id == created.id && t.revoked_at_ms.is_none())
    );
    a.op.revoke_enrolment_token(study, created.id)
        .await
        .unwrap();
    let e = b.base.enrol(&created.token, "beta").await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    let used = b.op.list_enrolment_tokens(study).await.unwrap();
    let first = used.iter().find(|t| t.participant_id == Some(pid)).unwrap();
    let e =
        a.op.revoke_enrolment_token(study, first.id)
            .await
            .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    // Operator tokens: revoked in the database (the CLI's `token revoke`), refused by both at once.
    db.store.revoke_operator_token(&b.op_name).await.unwrap();
    let e = b.op.list_studies().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    a.stop().await;
    b.stop().await;
    other_db.cleanup().await;
}
both_backends!(
    revocation_holds_in_every_process_at_once,
    revocation_across_processes
);

/// `confide-coordinator token list` and `token revoke` on a database the store then reads.
#[tokio::test]
async fn operator_tokens_are_listed_and_revoked_by_the_cli() {
    let db = TestDb::new(confide_coordinator::store::Backend::Sqlite).await;
    let token = support::create_operator_token(&db.url, None, "ops");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"))
            .args(["--database-url", &db.url, "token"])
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&["list"]);
    assert!(
        listed.contains("ops\t") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "secrets are never listed");
    run(&["revoke", "--name", "ops"]);
    assert!(run(&["list"]).contains("revoked at"));
    assert_eq!(db.store.operator_for_token(&token).await.unwrap(), None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"))
        .args([
            "--database-url",
            &db.url,
            "token",
            "revoke",
            "--name",
            "nobody",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    db.cleanup().await;
}
