//! `bench dpsgd`: plain SGD steps against DP-SGD steps (ghost clipping + OS-seeded noise) for the
//! same model, on the same synthetic batch, measured in one run. Steps of the two kinds alternate so
//! that a change in machine load hits both alike; each phase of a step is timed as well.

use std::time::{Duration, Instant};

use confide_common::model::ModelSpec;
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::dp::GaussianNoise;
use crate::dpsgd::{
    DpSgdParams, Optimizer, OptimizerConfig, PhaseTime, Stopwatch, check_supported,
    noisy_gradient_timed, plain_gradient_timed,
};
use crate::model::Network;
use crate::train::TrainError;

/// Measured speeds (JSON output of `bench dpsgd`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: ModelSpec,
    pub num_parameters: usize,
    pub batch_size: usize,
    pub steps: u64,
    pub torch_threads: i32,
    pub plain_steps_per_second: f64,
    pub dp_steps_per_second: f64,
    /// DP step time over plain step time (`plain_steps_per_second / dp_steps_per_second`).
    pub ratio: f64,
    /// Median wall time of one plain step.
    pub plain_median_ms: f64,
    /// Median wall time of one DP step.
    pub dp_median_ms: f64,
    /// `dp_median_ms / plain_median_ms`: on a shared machine, less swayed than `ratio` by the occasional step
    /// that waited for the CPU.
    pub median_ratio: f64,
    /// Time to draw one step's noise vector (included in the DP step), in milliseconds.
    pub noise_ms_per_step: f64,
    /// Where a plain step's time goes (mean over the measured steps, same run).
    pub plain_phases: Vec<PhaseTime>,
    /// Where a DP step's time goes (mean over the measured steps, same run).
    pub dp_phases: Vec<PhaseTime>,
}

/// Runs `steps` plain and `steps` DP steps (after `warmup` of each) with SGD + momentum,
/// `C = 1`, `σ = 1`.
pub fn bench_dpsgd(
    spec: &ModelSpec,
    batch_size: usize,
    steps: u64,
    warmup: u64,
) -> Result<BenchReport, TrainError> {
    spec.validate()?;
    check_supported(spec)?;
    if batch_size == 0 || steps == 0 {
        return Err(TrainError::InvalidParams(
            "batch size and steps must be at least 1".into(),
        ));
    }
    let b = batch_size as i64;
    let x = Tensor::randn(
        [b, spec.input_dim() as i64],
        (Kind::Float, tch::Device::Cpu),
    );
    let y = Tensor::randint(
        spec.num_classes() as i64,
        [b],
        (Kind::Int64, tch::Device::Cpu),
    );
    let init = spec.initial_parameters(0);
    let sgd = OptimizerConfig::Sgd {
        learning_rate: 0.01,
        momentum: 0.9,
    };
    let mut plain_net = Network::new(spec, &init)?;
    let mut dp_net = Network::new(spec, &init)?;
    let mut plain_opt = Optimizer::new(sgd, plain_net.params().len());
    let mut dp_opt = Optimizer::new(sgd, dp_net.params().len());
    let mut noise = GaussianNoise::from_os_entropy()?;
    let params = DpSgdParams {
        sampling_rate: 0.01,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        expected_batch_size: batch_size as f64,
    };

    let mut plain_clock = Stopwatch::started();
    let mut dp_clock = Stopwatch::started();
    let mut plain_step = |clock: &mut Stopwatch| {
        clock.resume();
        let (g, _) = plain_gradient_timed(&plain_net, &x, &y, clock);
        plain_opt.step(plain_net.params_mut(), &g);
        clock.lap("optimizer");
    };
    let mut dp_step = |clock: &mut Stopwatch| {
        clock.resume();
        let (g, _) = noisy_gradient_timed(&dp_net, &x, &y, &params, &mut noise, clock);
        dp_opt.step(dp_net.params_mut(), &g);
        clock.lap("optimizer");
    };
    for _ in 0..warmup {
        plain_step(&mut Stopwatch::disabled());
        dp_step(&mut Stopwatch::disabled());
    }
    // Single steps alternate, so that a change in machine load hits both kinds alike.
    let mut plain_times = Vec::with_capacity(steps as usize);
    let mut dp_times = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        let t = Instant::now();
        plain_step(&mut plain_clock);
        plain_times.push(t.elapsed());
        let t = Instant::now();
        dp_step(&mut dp_clock);
        dp_times.push(t.elapsed());
    }
    let plain_time: Duration = plain_times.iter().sum();
    let dp_time: Duration = dp_times.iter().sum();
    let plain_median = median_ms(&mut plain_times);
    let dp_median = median_ms(&mut dp_times);

    let mut noise_only = GaussianNoise::from_os_entropy()?;
    let mut v = vec![0f32; spec.num_parameters()];
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        noise_only.fill_f32(&mut v, 1.0);
    }
    let noise_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(reps);

    let plain_sps = steps as f64 / plain_time.as_secs_f64();
    let dp_sps = steps as f64 / dp_time.as_secs_f64();
    Ok(BenchReport {
        model: spec.clone(),
        num_parameters: spec.num_parameters(),
        batch_size,
        steps,
        torch_threads: tch::get_num_threads(),
        plain_steps_per_second: plain_sps,
        dp_steps_per_second: dp_sps,
        ratio: plain_sps / dp_sps,
        plain_median_ms: plain_median,
        dp_median_ms: dp_median,
        median_ratio: dp_median / plain_median,
        noise_ms_per_step: noise_ms,
        plain_phases: plain_clock.per_step(steps),
        dp_phases: dp_clock.per_step(steps),
    })
}

/// Median of `times` in milliseconds (`times` non-empty; sorted in place).
fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort_unstable();
    let mid = times.len() / 2;
    let median = if times.len().is_multiple_of(2) {
        (times[mid - 1] + times[mid]) / 2
    } else {
        times[mid]
    };
    median.as_secs_f64() * 1e3
}
