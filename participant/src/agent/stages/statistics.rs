//! AdvertiseKeys of a statistics round: instead of training, the site computes its clamped feature sums (each
//! feature mapped onto [-1, 1] by the study's public range and clamped there: Σz, Σz² per feature and the record
//! count, `confide_common::statistics`), releases them through opendp's zCDP Gaussian mechanism
//! ([`crate::release`]) at exactly the ρ the round plans to charge, and enters secure aggregation with the noisy
//! vector. The rest of the round is a training round's: the charge is durable before the masked vector is sent.

use confide_common::api::RoundTask;
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::statistics::{clamped_sums, sensitivity, vector_len};

use crate::agent::dataset::Statistics;
use crate::agent::{Agent, AgentError, Next};
use crate::release::gaussian_release;

/// What a site releases in a statistics round, from its raw records: the noisy sums, or why it declines.
fn noisy_sums(
    task: &RoundTask,
    statistics: Statistics,
    records: &crate::data::Dataset,
) -> Result<(Vec<f32>, Vec<PrivacyEvent>), String> {
    if statistics != Statistics::Study {
        return Err(
            "this agent standardises with a statistics file or its own statistics, not the study's; it takes \
             no part in statistics rounds"
                .into(),
        );
    }
    let Some(p) = task.preprocessing.as_ref() else {
        return Err("a statistics round of a study that declares no feature ranges".into());
    };
    let Some(round) = p.statistics_round else {
        return Err("a statistics round of a study that declares none".into());
    };
    let scaling = crate::agent::dataset::range_scaling_for(p, records)?;
    let d = records.num_features();
    if task.num_parameters != vector_len(d) as i64
        || task.protocol.vector_len as usize != vector_len(d) + 1
    {
        return Err(format!(
            "the round sends {} values, a statistics release of {d} features is {}",
            task.num_parameters,
            vector_len(d)
        ));
    }
    if records.len() > round.max_records_per_site as usize {
        return Err(format!(
            "this site holds more records than the study's max_records_per_site ({}), which bounds the released \
             sums",
            round.max_records_per_site
        ));
    }
    // The noise follows from the ρ the round charges: a release with ρ-zCDP at L2 sensitivity Δ has noise std
    // Δ/√(2ρ), taken a hair (1e-9) wider so that opendp's outward-rounded map stays at or below the charged ρ.
    // Whatever ρ the coordinator plans, this site releases no more than what it is charged for.
    let planned = task.planned_events.clone();
    let [PrivacyEvent::ZcdpGaussian { rho }] = planned.as_slice() else {
        return Err("a statistics round must plan exactly one zCDP Gaussian release".into());
    };
    let rho = *rho;
    planned[0]
        .validate()
        .map_err(|e| format!("invalid planned privacy event: {e}"))?;
    let delta = sensitivity(d);
    let noise_std = delta / (2.0 * rho).sqrt() * (1.0 + 1e-9);
    let sums = clamped_sums(&scaling, &records.features);
    let noisy = gaussian_release(&sums, delta, noise_std, rho)
        .map_err(|e| format!("the statistics release: {e}"))?;
    Ok((noisy.into_iter().map(|v| v as f32).collect(), planned))
}

impl Agent {
    /// AdvertiseKeys of a statistics round: budget check, the DP release of the clamped sums, keys.
    pub(in crate::agent) async fn join_statistics(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        tracing::info!(
            round = task.round_number,
            round_id = task.round_id,
            "selected for a statistics round"
        );
        let cohort = match self.cohort(task)? {
            Ok(c) => c,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let budget = self.cfg.budget;
        let epsilon_after = self
            .ledger
            .epsilon_with(&task.planned_events, budget.delta)
            .await?;
        if epsilon_after > budget.epsilon {
            let reason = format!(
                "local privacy budget: the statistics release would bring the site's ε to {epsilon_after:.4}, over \
                 its budget {} (δ = {})",
                budget.epsilon, budget.delta
            );
            return Ok(self.decline(task, reason));
        }
        let (update, planned) = match noisy_sums(task, self.statistics, &self.data) {
            Ok(u) => u,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        tracing::info!(
            round = task.round_number,
            epsilon_after,
            values = update.len(),
            "statistics released through opendp (sent only masked, after the charge)"
        );
        // A statistics release uses every record, held out or not.
        self.enter_secagg(task, cohort, update, planned, DataPartition::All)
    }
}
