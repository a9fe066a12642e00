//! Measures which local optimiser suits federated DP-SGD on the breast-cancer data, to choose the study default
//! (`local_training`). Simulates the federation in process with the agent's own training call ([`train_round`]):
//! `SITES` sites with disjoint slices of 80 % of the records, `ROUNDS` rounds of FedAvg (server learning rate 1,
//! weight 1 per site, no quantisation: its error is far below the DP noise), σ calibrated (PLD) so that every site
//! spends ε = 1 at δ = 1e-5 over the whole study, and test accuracy on the held-out 20 % with statistics fixed from
//! the whole file. Prints mean and min accuracy over `TRIALS` runs per optimiser.
//!
//! `[ROUNDS=5] [Q=0.2] [TRIALS=8] cargo run -p confide-participant --example local_optimizer_sweep`

use std::path::Path;

use confide_common::dp::{AccountantKind, noise_multiplier_for_target};
use confide_common::model::ModelSpec;
use confide_participant::data::{CsvOptions, Dataset, Standardization, read_csv};
use confide_participant::dpsgd::OptimizerConfig;
use confide_participant::model::{Network, features_tensor, labels_tensor};
use confide_participant::train::{TrainingPlan, train_round};

const SITES: usize = 4;
const LOCAL_EPOCHS: u64 = 1;

/// `name` from the environment, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(1);
    let rounds: u64 = env_or("ROUNDS", 5);
    let q: f64 = env_or("Q", 0.2);
    let trials: u64 = env_or("TRIALS", 8);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/breast_cancer_wisconsin.csv");
    let mut all = read_csv(
        &path,
        &CsvOptions {
            label: "malignant".into(),
            features: None,
            num_classes: 2,
        },
    )?;
    Standardization::compute(&all).apply(&mut all);
    let (train, test) = all.split(0.2, 7);
    let sites: Vec<_> = (0..SITES)
        .map(|k| {
            let idx: Vec<usize> = (k..train.len()).step_by(SITES).collect();
            train.select(&idx)
        })
        .collect();
    let spec =
        ModelSpec::from_json(r#"{"kind":"logistic_regression","input_dim":30,"num_classes":2}"#)?;
    let steps = (LOCAL_EPOCHS as f64 / q).ceil() as u64;
    let sigma = noise_multiplier_for_target(1.0, 1e-5, q, steps * rounds, AccountantKind::Pld)?;
    println!(
        "{SITES} sites × ~{} records, {rounds} rounds × {steps} steps, q = {q}, C = 1, σ = {sigma:.3} (ε = 1 at δ = 1e-5), {trials} trials",
        sites[0].len()
    );
    let x = features_tensor(&test.features, test.num_features());
    let y = labels_tensor(&test.labels);
    let configs = [
        (
            "sgd lr 0.1 momentum 0",
            OptimizerConfig::Sgd {
                learning_rate: 0.1,
                momentum: 0.0,
            },
        ),
        (
            "sgd lr 0.5 momentum 0",
            OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.0,
            },
        ),
        (
            "sgd lr 1.0 momentum 0",
            OptimizerConfig::Sgd {
                learning_rate: 1.0,
                momentum: 0.0,
            },
        ),
        (
            "sgd lr 0.1 momentum 0.9",
            OptimizerConfig::Sgd {
                learning_rate: 0.1,
                momentum: 0.9,
            },
        ),
        (
            "sgd lr 0.2 momentum 0.9",
            OptimizerConfig::Sgd {
                learning_rate: 0.2,
                momentum: 0.9,
            },
        ),
        (
            "sgd lr 0.5 momentum 0.9",
            OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.9,
            },
        ),
        (
            "sgd lr 0.5 momentum 0.5",
            OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.5,
            },
        ),
        ("adam lr 0.01", OptimizerConfig::adam(0.01)),
        ("adam lr 0.05", OptimizerConfig::adam(0.05)),
        ("adam lr 0.1", OptimizerConfig::adam(0.1)),
    ];
    println!(
        "{:<26} {:>14} {:>13} {:>10}",
        "local optimiser", "mean accuracy", "min accuracy", "mean loss"
    );
    let expected_batch_size = q * sites.iter().map(Dataset::len).max().unwrap_or(1) as f64;
    for (name, optimizer) in configs {
        let plan = TrainingPlan {
            sampling_rate: q,
            clip_norm: 1.0,
            noise_multiplier: sigma,
            // A public divisor as a study would declare it: q × the sites' (equal) size.
            expected_batch_size,
            steps,
            optimizer,
        };
        let (mut acc_sum, mut acc_min, mut loss_sum) = (0.0, f64::INFINITY, 0.0);
        for trial in 0..trials {
            let mut global = spec.initial_parameters(trial);
            for _ in 0..rounds {
                let mut mean = vec![0f32; global.len()];
                for site in &sites {
                    let local = train_round(&spec, &global, site, &plan)?;
                    for ((m, l), g) in mean.iter_mut().zip(&local.parameters).zip(&global) {
                        *m += (l - g) / SITES as f32;
                    }
                }
                for (g, m) in global.iter_mut().zip(&mean) {
                    *g += m;
                }
            }
            let (acc, loss) = Network::new(&spec, &global)?.evaluate(&x, &y);
            acc_sum += acc;
            acc_min = acc_min.min(acc);
            loss_sum += loss;
        }
        println!(
            "{name:<26} {:>14.4} {:>13.4} {:>10.4}",
            acc_sum / trials as f64,
            acc_min,
            loss_sum / trials as f64
        );
    }
    Ok(())
}
