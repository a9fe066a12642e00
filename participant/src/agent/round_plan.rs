//! A round task's DP-SGD run and model, checked against what the coordinator will charge before anything is trained.

use confide_common::api::{LocalOptimizer, RoundTask};
use confide_common::dp::PrivacyEvent;
use confide_common::model::{ModelSpec, decode_safetensors, spec_from_safetensors};

use crate::dpsgd::OptimizerConfig;
use crate::train::TrainingPlan;

/// The local training of a round, derived from the events the coordinator will charge: exactly one DP-SGD run
/// whose q and σ are the study's. Anything else is refused (the agent would otherwise spend differently from
/// what is charged and checked).
pub fn training_plan(task: &RoundTask) -> Result<(TrainingPlan, Vec<PrivacyEvent>), String> {
    let planned: Vec<PrivacyEvent> = task.planned_events.clone();
    let [event] = planned.as_slice() else {
        return Err(format!(
            "the round plans {} privacy events; this agent takes part only in rounds of one DP-SGD run",
            planned.len()
        ));
    };
    event
        .validate()
        .map_err(|e| format!("invalid planned privacy event: {e}"))?;
    let PrivacyEvent::SubsampledGaussian {
        sampling_rate,
        noise_multiplier,
        steps,
    } = *event
    else {
        return Err("the round's planned privacy event is not a DP-SGD run".into());
    };
    if sampling_rate != task.dp.sampling_rate || noise_multiplier != task.dp.noise_multiplier {
        return Err(format!(
            "the planned events (q = {sampling_rate}, σ = {noise_multiplier}) do not match the study's DP-SGD \
             parameters (q = {}, σ = {})",
            task.dp.sampling_rate, task.dp.noise_multiplier
        ));
    }
    let expected_batch_size = task.dp.expected_batch_size;
    if !(expected_batch_size.is_finite() && expected_batch_size > 0.0) {
        return Err(format!(
            "the study's expected batch size {expected_batch_size} is not a finite number > 0"
        ));
    }
    let lt = task.local_training;
    let optimizer = match lt.optimizer {
        LocalOptimizer::Sgd => OptimizerConfig::Sgd {
            learning_rate: lt.learning_rate,
            momentum: lt.momentum,
        },
        LocalOptimizer::Adam => OptimizerConfig::adam(lt.learning_rate),
    };
    optimizer.validate()?;
    Ok((
        TrainingPlan {
            sampling_rate,
            clip_norm: task.dp.clip_norm,
            noise_multiplier,
            expected_batch_size,
            steps,
            optimizer,
        },
        planned,
    ))
}

/// The model spec (from the safetensors metadata) and the flat weights.
pub(crate) fn decode_weights(bytes: &[u8]) -> Result<(ModelSpec, Vec<f32>), String> {
    let spec = spec_from_safetensors(bytes)
        .map_err(|e| format!("unreadable model: {e}"))?
        .ok_or("the model file carries no model spec")?;
    let weights = decode_safetensors(&spec, bytes).map_err(|e| format!("unreadable model: {e}"))?;
    Ok((spec, weights))
}

/// The model spec (from the safetensors metadata) and the flat weights, checked against the task.
pub(crate) fn decode_model(
    bytes: &[u8],
    task: &RoundTask,
) -> Result<(ModelSpec, Vec<f32>), String> {
    let (spec, weights) = decode_weights(bytes)?;
    if weights.len() as i64 != task.num_parameters
        || task.protocol.vector_len as usize != weights.len() + 1
    {
        return Err(format!(
            "the model has {} parameters, the round expects {} (vector length {})",
            weights.len(),
            task.num_parameters,
            task.protocol.vector_len
        ));
    }
    Ok((spec, weights))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use confide_common::api::{
        DpParams, GraphParams, LocalTraining, QuantisationConfig, RoundStage, SecAggConfig,
    };
    use confide_common::model::encode_safetensors;
    use confide_common::secagg::{GraphKind, QuantizationParams, SecAggParams, ThreatModel};

    /// A semi-honest round task of three participants (ids 10, 11, 12; this site is index 0).
    pub(crate) fn task(planned: Vec<PrivacyEvent>) -> RoundTask {
        RoundTask {
            round_id: 4,
            study_id: 1,
            round_number: 2,
            stage: RoundStage::AdvertiseKeys,
            submitted: false,
            stage_deadline_ms: 0,
            model_version: 1,
            model_sha256: String::new(),
            dp: DpParams {
                sampling_rate: 0.2,
                noise_multiplier: 1.5,
                local_epochs: 1,
                clip_norm: 0.7,
                expected_batch_size: 10.0,
                target_epsilon: None,
            },
            local_training: LocalTraining::default(),
            secagg: SecAggConfig {
                threat_model: ThreatModel::SemiHonest,
                corrupt_fraction: 0.0,
                threshold: None,
                graph: GraphParams::Complete,
                quantisation: QuantisationConfig {
                    clip_range: Some(1.0),
                    bits: 32,
                    max_weight: 10,
                },
            },
            planned_events: planned,
            num_parameters: 8,
            participant_index: 0,
            participant_ids: vec![10, 11, 12],
            protocol: SecAggParams {
                round_id: 9,
                participants: 3,
                threshold: 2,
                graph: GraphKind::Complete,
                graph_seed: [0; 32],
                vector_len: 9,
                bits: 32,
                threat_model: Default::default(),
                max_corrupt: 0,
                roster: Default::default(),
            },
            quantisation: QuantizationParams::for_participants(1.0, 32, 3, 10).unwrap(),
            preprocessing: None,
            evaluation: None,
            purpose: Default::default(),
            statistics: None,
        }
    }

    #[test]
    fn the_plan_is_exactly_the_charged_events() {
        let sg = |sampling_rate, noise_multiplier, steps| PrivacyEvent::SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            steps,
        };
        let ok = vec![sg(0.2, 1.5, 5)];
        let (plan, events) = training_plan(&task(ok)).unwrap();
        assert_eq!(
            (plan.sampling_rate, plan.noise_multiplier, plan.steps),
            (0.2, 1.5, 5)
        );
        assert_eq!(plan.clip_norm, 0.7);
        // The study's public divisor, whatever this site's record count.
        assert_eq!(plan.expected_batch_size, 10.0);
        assert_eq!(
            plan.optimizer,
            OptimizerConfig::Sgd {
                learning_rate: 0.1,
                momentum: 0.9
            }
        );
        assert_eq!(events.len(), 1);

        for (planned, needle) in [
            (vec![], "0 privacy events"),
            (vec![sg(0.2, 1.5, 5), sg(0.2, 1.5, 5)], "2 privacy events"),
            (vec![sg(0.2, 0.5, 5)], "do not match"),
            (vec![sg(0.2, 1.5, 0)], "invalid planned"),
            (
                vec![PrivacyEvent::ZcdpGaussian { rho: 0.1 }],
                "not a DP-SGD run",
            ),
        ] {
            let e = training_plan(&task(planned)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn the_model_must_match_the_round() {
        let t = task(vec![]);
        let spec =
            ModelSpec::from_json(r#"{"kind":"logistic_regression","input_dim":3,"num_classes":2}"#)
                .unwrap();
        let bytes = encode_safetensors(&spec, &spec.initial_parameters(1)).unwrap();
        let (s, w) = decode_model(&bytes, &t).unwrap();
        assert_eq!((s, w.len()), (spec, 8));
        let bigger =
            ModelSpec::from_json(r#"{"kind":"logistic_regression","input_dim":4,"num_classes":2}"#)
                .unwrap();
        let bytes = encode_safetensors(&bigger, &bigger.initial_parameters(1)).unwrap();
        assert!(
            decode_model(&bytes, &t)
                .unwrap_err()
                .contains("round expects 8")
        );
        assert!(
            decode_model(b"junk", &t)
                .unwrap_err()
                .contains("unreadable")
        );
    }
}
