//! One background driver per active round: it holds the round's lease, feeds the participants' stored messages to
//! the sans-IO secure-aggregation server, closes each stage when everyone eligible has answered or the deadline
//! passes, persists the server state at every stage boundary (together with the next stage's broadcasts), and at
//! the end publishes the new model and charges the ledger in one transaction — or aborts, publishing and charging
//! nothing.
//!
//! Crash safety: the database is the queue. Messages are stored by whichever process receives them; the server
//! state (`SecAggServer::encode`) is persisted at every stage boundary, in the transaction that also deletes the
//! closed stage's messages (masked inputs included: they live on only inside the snapshot's running sum). A
//! restarted driver decodes the last snapshot and replays the current stage's stored messages. Leases (a row
//! update with expiry) make sure two coordinator processes on one database never drive the same round.

use std::collections::HashSet;
use std::time::Duration;

use confide_common::api::RoundStage;
use confide_common::secagg::{self, AbortReason, DropReason, RoundOutcome, SecAggServer};

use super::participation::awaited;
use super::publication::{Completed, publish};
use super::{RoundError, RoundPlan, abort, abort_excluding, deadline_secs};
use crate::service::Coordinator;
use crate::service::studies;
use crate::service::wakeups::{SAFETY_NET, Topic};
use crate::store::{StageBoundary, StoreError, now_ms};

/// Starts a driver for `round_id` in this process unless one is running.
pub fn spawn(ctx: Coordinator, round_id: i64) {
    {
        let Ok(mut running) = ctx.drivers.lock() else {
            return;
        };
        if !running.insert(round_id) {
            return;
        }
    }
    tokio::spawn(async move {
        run(&ctx, round_id).await;
        if let Ok(mut running) = ctx.drivers.lock() {
            running.remove(&round_id);
        }
    });
}

/// Every second, starts drivers for unfinished rounds this process is not driving (rounds left by a crashed or
/// stopped process are picked up once their lease expires), and creates the zero-valued counters of studies another
/// process created.
pub fn supervise(ctx: Coordinator) {
    tokio::spawn(async move {
        loop {
            match ctx.store.study_ids().await {
                Ok(ids) => ids.into_iter().for_each(|id| ctx.metrics.init_study(id)),
                Err(e) => tracing::warn!(error = %e, "could not list studies"),
            }
            match ctx.store.active_rounds().await {
                Ok(rounds) => {
                    for r in rounds {
                        spawn(ctx.clone(), r.id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list active rounds"),
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// Waits (bounded) until every driver of this process has stopped after shutdown.
pub async fn wait_stopped(ctx: &Coordinator) {
    for _ in 0..100 {
        if ctx.drivers.lock().map(|d| d.is_empty()).unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

enum Step {
    /// The round is finished (by us or anyone).
    Finished,
    /// Another process holds the lease.
    Elsewhere,
}

async fn run(ctx: &Coordinator, round_id: i64) {
    loop {
        let result = drive(ctx, round_id).await;
        match result {
            Ok(Step::Finished) => return,
            Ok(Step::Elsewhere) => {}
            Err(e) => {
                tracing::error!(round = round_id, error = %e, "round driver failed; retrying")
            }
        }
        if ctx.shutdown.is_cancelled() {
            let _ = ctx.store.release_round_lease(round_id, &ctx.node_id).await;
            return;
        }
        // Idle while another process drives; stop once the round is finished.
        match ctx.store.get_round(round_id).await {
            Ok(r) if r.outcome.is_some() => return,
            Err(StoreError::NotFound(_)) => return,
            _ => {}
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                let _ = ctx.store.release_round_lease(round_id, &ctx.node_id).await;
                return;
            }
            _ = tokio::time::sleep(ctx.limits.lease_ttl / 3) => {}
        }
    }
}

/// Feeds one stored message to the server (it parses by the server's stage: JSON, or the binary masked input). A
/// message the server rejects (e.g. a ciphertext addressed to a non-neighbour, a bad signature) only drops its
/// sender; it is logged without its content.
fn apply(server: &mut SecAggServer, stage: RoundStage, sender: i64, body: &[u8]) {
    if let Err(e) = server.handle_message(body) {
        tracing::warn!(participant = sender, stage = stage.as_str(), error = %e, "message rejected by the secure-aggregation server");
    }
}

fn api_stage(s: secagg::RoundStage) -> RoundStage {
    RoundStage::of_protocol(s)
}

/// Participants a secure-aggregation abort names as cheaters, with why, to list in the round's exclusions: the
/// dealers that holders proved dealt bad shares.
fn cheaters(reason: &AbortReason, plan: &RoundPlan) -> Vec<(i64, String)> {
    match reason {
        AbortReason::BadDealing { dealers } => dealers
            .iter()
            .filter_map(|d| plan.participant_at(*d))
            .map(|p| {
                (
                    p,
                    "dealt shares that do not match its commitments (proved by the holders' complaints at share \
                     verification); the operator may disable it"
                        .to_string(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Participants the server dropped in `closed` for what they sent (not for silence), with why, to list in the
/// round's exclusions so the operator can see them and disable them.
fn misbehaved(server: &SecAggServer, plan: &RoundPlan, closed: RoundStage) -> Vec<(i64, String)> {
    let Some(stage) = closed.protocol() else {
        return Vec::new();
    };
    (0..plan.secagg.participants)
        .filter_map(|i| {
            let dropout = server.status(i)?.dropped?;
            let why = match dropout.reason {
                DropReason::BadCommitments => {
                    "its share commitments failed the degree test (its dealing was dropped before anyone saw it); \
                     the operator may disable it"
                }
                DropReason::FalseComplaint => {
                    "it complained about a dealer whose shares were fine (dropped, the round went on); the \
                     operator may disable it"
                }
                _ => return None,
            };
            (dropout.stage == stage)
                .then(|| plan.participant_at(i).map(|p| (p, why.to_string())))
                .flatten()
        })
        .collect()
}

async fn drive(ctx: &Coordinator, round_id: i64) -> Result<Step, RoundError> {
    if !ctx
        .store
        .acquire_round_lease(round_id, &ctx.node_id, ctx.limits.lease_ttl)
        .await?
    {
        let r = ctx.store.get_round(round_id).await?;
        return Ok(if r.outcome.is_some() {
            Step::Finished
        } else {
            Step::Elsewhere
        });
    }
    let round = ctx.store.get_round(round_id).await?;
    if round.outcome.is_some() {
        return Ok(Step::Finished);
    }
    let study = studies::load(ctx, round.study_id).await?;
    let plan = RoundPlan::parse(&round)?;
    let mut stage = round.stage;
    let snapshot = ctx.store.server_snapshot(round_id).await?;
    let mut server = match rebuild(snapshot.as_deref(), &plan, stage) {
        Ok(s) => s,
        Err(reason) => {
            abort(ctx, &round, &format!("cannot resume the round: {reason}")).await?;
            return Ok(Step::Finished);
        }
    };
    let mut deadline = round.stage_deadline;
    let mut stage_started = std::time::Instant::now();
    let mut applied: HashSet<i64> = HashSet::new();
    let mut last_renew = std::time::Instant::now();
    // The lease is renewed at a third of its lifetime; the driver wakes at least that often (and at the deadline).
    let lease_renewal = (ctx.limits.lease_ttl / 3).min(SAFETY_NET);
    tracing::info!(round = round_id, stage = stage.as_str(), node = %ctx.node_id, "driving round");
    // Woken by every message stored for this round (in any process) and by aborts: a stage closes as soon as
    // its last awaited message is stored, not at the next tick.
    let topic = ctx.wakeups.topic(Topic::Round(round_id));
    loop {
        // Subscribed before reading, so a message stored while this iteration runs still wakes the next wait.
        let changed = topic.notified();
        if ctx.shutdown.is_cancelled() {
            ctx.store
                .release_round_lease(round_id, &ctx.node_id)
                .await?;
            return Ok(Step::Elsewhere);
        }
        if last_renew.elapsed() > lease_renewal {
            if !ctx
                .store
                .acquire_round_lease(round_id, &ctx.node_id, ctx.limits.lease_ttl)
                .await?
            {
                tracing::warn!(round = round_id, "lost the round lease");
                return Ok(Step::Elsewhere);
            }
            last_renew = std::time::Instant::now();
        }
        let current = ctx.store.get_round(round_id).await?;
        if current.outcome.is_some() {
            return Ok(Step::Finished); // e.g. aborted by an operator
        }
        // New messages only, summed or recorded off the async runtime. Masked inputs are as large as the model:
        // they are read and added one at a time (never N bodies in memory); small control messages in batches.
        let mut fresh = Vec::new();
        let mut fresh_bytes = 0usize;
        let senders = ctx.store.stage_message_senders(round_id, stage).await?;
        for sender in senders {
            if !applied.contains(&sender)
                && let Some(body) = ctx.store.stage_message(round_id, stage, sender).await?
            {
                applied.insert(sender);
                fresh_bytes += body.len();
                fresh.push((sender, body));
            }
            if fresh_bytes >= APPLY_BATCH_BYTES {
                server = apply_all(server, stage, std::mem::take(&mut fresh)).await?;
                fresh_bytes = 0;
            }
        }
        if !fresh.is_empty() {
            server = apply_all(server, stage, fresh).await?;
        }
        let eligible = awaited(ctx, round_id, stage, plan.secagg.threat_model).await?;
        let everyone = eligible.iter().all(|p| applied.contains(p));
        if everyone || now_ms() >= deadline {
            let sid = round.study_id.to_string();
            ctx.metrics
                .stage_duration
                .with_label_values(&[stage.as_str()])
                .observe(stage_started.elapsed().as_secs_f64());
            let closed;
            (server, closed) = off_runtime(server, |server| server.close_stage()).await?;
            if let Err(e) = closed {
                abort(ctx, &round, &format!("secure aggregation failed: {e}")).await?;
                return Ok(Step::Finished);
            }
            // The set that completed this stage, as the server counts it (a rejected message drops its sender).
            let set = match stage.protocol() {
                Some(p) => server.completed(p),
                None => server.u4(),
            };
            let completed: Vec<i64> = set.iter().filter_map(|i| plan.participant_at(*i)).collect();
            let dropped = eligible.iter().filter(|p| !completed.contains(p)).count();
            if dropped > 0 {
                ctx.metrics
                    .dropouts_total
                    .with_label_values(&[sid.as_str(), stage.as_str()])
                    .inc_by(dropped as u64);
            }
            ctx.metrics
                .round_participants
                .with_label_values(&[sid.as_str(), stage.as_str()])
                .set(completed.len() as f64);
            // The minimum-aggregate rule, as early as it can fail: a set only shrinks, and the coordinator must not
            // even learn (by unmasking) a sum of fewer inputs than the study allows.
            let needed = study.min_aggregate(plan.secagg.threshold) as usize;
            if server.outcome().is_none() && completed.len() < needed {
                abort(
                    ctx,
                    &round,
                    &format!(
                        "only {} participant(s) completed {}, a round publishes only with at least {needed} inputs \
                         (max of min_participants, the secure-aggregation threshold and 3)",
                        completed.len(),
                        stage.as_str()
                    ),
                )
                .await?;
                return Ok(Step::Finished);
            }
            match server.outcome() {
                None => {
                    let next = api_stage(server.stage());
                    let broadcasts = collect_broadcasts(&server, &plan)?;
                    let next_deadline = now_ms() + 1000 * deadline_secs(&study, next) as i64;
                    let t = StageBoundary {
                        round_id,
                        from_stage: stage,
                        to_stage: next,
                        server_state: server.encode(),
                        stage_deadline: next_deadline,
                        completed,
                        broadcasts,
                        exclusions: misbehaved(&server, &plan, stage),
                    };
                    if !ctx.store.advance_stage(&t).await? {
                        return Ok(Step::Elsewhere);
                    }
                    tracing::info!(
                        round = round_id,
                        from = stage.as_str(),
                        to = next.as_str(),
                        "stage closed"
                    );
                    ctx.round_changed(round_id, &plan.selected).await;
                    stage = next;
                    deadline = next_deadline;
                    stage_started = std::time::Instant::now();
                    applied.clear();
                    continue;
                }
                Some(RoundOutcome::Completed(sum)) => {
                    let in_aggregate = server
                        .u3()
                        .iter()
                        .filter_map(|i| plan.participant_at(*i))
                        .collect();
                    let completed = Completed {
                        round: &round,
                        study: &study,
                        plan: &plan,
                        stage,
                        completed,
                        in_aggregate,
                        sum: &sum,
                    };
                    publish(ctx, completed).await?;
                    return Ok(Step::Finished);
                }
                Some(RoundOutcome::Aborted { reason }) => {
                    let why = format!("secure aggregation aborted: {reason}");
                    let cheaters = cheaters(&reason, &plan);
                    if cheaters.is_empty() {
                        abort(ctx, &round, &why).await?;
                    } else {
                        for (p, _) in &cheaters {
                            tracing::warn!(
                                round = round_id,
                                participant = p,
                                "participant excluded: proved to have dealt bad shares"
                            );
                        }
                        abort_excluding(ctx, &round, &why, &cheaters).await?;
                    }
                    return Ok(Step::Finished);
                }
            }
        }
        let wait = Duration::from_millis(
            (deadline - now_ms()).clamp(1, lease_renewal.as_millis() as i64) as u64,
        );
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    }
}

/// Messages held in memory at once before they are fed to the server (one masked input of a large model already
/// exceeds it, so those go one by one).
const APPLY_BATCH_BYTES: usize = 1 << 20;

/// Feeds stored messages to the server off the async runtime.
async fn apply_all(
    server: SecAggServer,
    stage: RoundStage,
    fresh: Vec<(i64, Vec<u8>)>,
) -> Result<SecAggServer, RoundError> {
    Ok(off_runtime(server, move |server| {
        for (sender, body) in fresh {
            apply(server, stage, sender, &body);
        }
    })
    .await?
    .0)
}

/// Runs CPU-heavy server work (summing masked inputs, rebuilding and removing masks at the unmasking close) on the
/// blocking pool, so that it never stalls the async runtime. Should the work panic, the driver fails and a new one
/// resumes from the last snapshot.
async fn off_runtime<T: Send + 'static>(
    mut server: SecAggServer,
    work: impl FnOnce(&mut SecAggServer) -> T + Send + 'static,
) -> Result<(SecAggServer, T), RoundError> {
    tokio::task::spawn_blocking(move || {
        let out = work(&mut server);
        (server, out)
    })
    .await
    .map_err(|e| RoundError::Internal(format!("secure-aggregation server work failed: {e}")))
}

/// Restores the round's server from the snapshot persisted at the last stage boundary (or at round creation).
/// The caller then replays the current stage's stored messages, which is all the database still holds: earlier
/// stages' messages are deleted in the transaction that persists the next snapshot. `Err(reason)` if the snapshot
/// is missing, unreadable, or does not belong to this round and stage (the round is then aborted).
fn rebuild(
    snapshot: Option<&[u8]>,
    plan: &RoundPlan,
    current: RoundStage,
) -> Result<SecAggServer, String> {
    let bytes = snapshot.ok_or("no secure-aggregation server snapshot is stored for the round")?;
    let server = SecAggServer::decode(bytes)
        .map_err(|e| format!("the stored secure-aggregation server snapshot is unreadable: {e}"))?;
    if server.params() != &plan.secagg {
        return Err(
            "the stored secure-aggregation server snapshot belongs to another round".into(),
        );
    }
    if api_stage(server.stage()) != current {
        return Err(format!(
            "the stored secure-aggregation server snapshot is in stage {}, the round in {}",
            api_stage(server.stage()).as_str(),
            current.as_str()
        ));
    }
    Ok(server)
}

/// The server's messages for the participants at the start of the server's current stage, as (recipient, JSON);
/// recipient 0 = all.
fn collect_broadcasts(
    server: &SecAggServer,
    plan: &RoundPlan,
) -> Result<Vec<(i64, Vec<u8>)>, RoundError> {
    let mut out = Vec::new();
    for b in server.broadcasts().map_err(RoundError::internal)? {
        let recipient = match b.recipient() {
            None => 0,
            Some(index) => plan
                .participant_at(index)
                .ok_or_else(|| RoundError::Internal(format!("no participant at index {index}")))?,
        };
        out.push((recipient, b.to_json().into_bytes()));
    }
    Ok(out)
}
