//! `confide privacy ...`: the privacy calculator. ε of a DP-SGD run, the noise needed for a target ε, and a
//! benchmark of the accountants and the noise sampler. Results are JSON on stdout; errors go to stderr.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use confide_common::dp::{
    AccountantKind, GaussianNoise, PldAccountant, PrivacyEvent, RdpAccountant,
    noise_multiplier_for_target,
};
use serde_json::json;

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// ε of `steps` DP-SGD steps with Poisson sampling rate q and noise multiplier σ, at a given δ.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier σ (to 0.001) that keeps ε ≤ a target for (δ, q, steps).
    Plan(PlanArgs),
    /// Time the accountants (T = 10,000) and the noise sampler; prints measurements.
    Bench(BenchArgs),
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q (batch size / dataset size), in (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Noise multiplier σ: noise standard deviation divided by the clipping norm, > 0.
    #[arg(long)]
    noise_multiplier: f64,
    /// Number of DP-SGD steps, ≥ 1.
    #[arg(long)]
    steps: u64,
    /// δ of the (ε, δ) guarantee, in (0, 1).
    #[arg(long)]
    delta: f64,
    /// Accountant: `pld` (tight, default) or `rdp` (fast, looser).
    #[arg(long, default_value = "pld")]
    accountant: AccountantKind,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct PlanArgs {
    /// The ε not to exceed, > 0.
    #[arg(long)]
    target_epsilon: f64,
    /// δ of the (ε, δ) guarantee, in (0, 1).
    #[arg(long)]
    delta: f64,
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Number of DP-SGD steps, ≥ 1.
    #[arg(long)]
    steps: u64,
    /// Accountant: `pld` (tight, default) or `rdp` (fast, looser).
    #[arg(long, default_value = "pld")]
    accountant: AccountantKind,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Print the measurements as one JSON object (otherwise as readable lines).
    #[arg(long)]
    json: bool,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

pub fn run(cmd: PrivacyCommand) -> anyhow::Result<()> {
    match cmd {
        PrivacyCommand::Epsilon(args) => epsilon(args),
        PrivacyCommand::Plan(args) => plan(args),
        PrivacyCommand::Bench(args) => bench(args),
    }
}

fn epsilon(args: EpsilonArgs) -> anyhow::Result<()> {
    let event = PrivacyEvent::SubsampledGaussian {
        sampling_rate: args.sampling_rate,
        noise_multiplier: args.noise_multiplier,
        steps: args.steps,
    };
    let eps = confide_common::dp::ledger::epsilon(&[event], args.delta, args.accountant)?;
    print_json(&json!({
        "epsilon": eps,
        "delta": args.delta,
        "accountant": args.accountant,
        "sampling_rate": args.sampling_rate,
        "noise_multiplier": args.noise_multiplier,
        "steps": args.steps,
    }))
}

fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let sigma = noise_multiplier_for_target(
        args.target_epsilon,
        args.delta,
        args.sampling_rate,
        args.steps,
        args.accountant,
    )?;
    let event = PrivacyEvent::SubsampledGaussian {
        sampling_rate: args.sampling_rate,
        noise_multiplier: sigma,
        steps: args.steps,
    };
    let achieved = confide_common::dp::ledger::epsilon(&[event], args.delta, args.accountant)?;
    print_json(&json!({
        "noise_multiplier": sigma,
        "epsilon": achieved,
        "target_epsilon": args.target_epsilon,
        "delta": args.delta,
        "accountant": args.accountant,
        "sampling_rate": args.sampling_rate,
        "steps": args.steps,
    }))
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Median wall time in seconds of `repeats` runs of `f`.
fn median_seconds(repeats: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (q, sigma, steps, delta) = (0.01, 1.0, 10_000u64, 1e-5);
    let events = [PrivacyEvent::SubsampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
        steps,
    }];
    let one_core = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("building a one-thread pool")?;
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    let mut pld_eps = 0.0;
    let mut rdp_eps = 0.0;
    let pld_seconds = one_core.install(|| {
        median_seconds(args.repeats, || {
            pld_eps = pld.epsilon(&events, delta).unwrap_or(f64::NAN);
        })
    });
    let rdp_seconds = one_core.install(|| {
        median_seconds(args.repeats, || {
            rdp_eps = rdp.epsilon(&events, delta).unwrap_or(f64::NAN);
        })
    });
    let mut plan_sigma = 0.0;
    let plan_seconds = one_core.install(|| {
        median_seconds(1, || {
            plan_sigma = noise_multiplier_for_target(1.0, delta, q, steps, AccountantKind::Pld)
                .unwrap_or(f64::NAN);
        })
    });

    let len = 1usize << 24;
    let mut buf = vec![0.0f32; len];
    let mut noise = GaussianNoise::from_os_entropy()?;
    let noise_one_core =
        one_core.install(|| median_seconds(args.repeats, || noise.add_to_f32(&mut buf, 1.0)));
    let noise_all_cores = median_seconds(args.repeats, || noise.add_to_f32(&mut buf, 1.0));
    let threads = rayon::current_num_threads();

    let report = json!({
        "setting": {"sampling_rate": q, "noise_multiplier": sigma, "steps": steps, "delta": delta},
        "pld_epsilon": pld_eps,
        "pld_epsilon_seconds_one_core": pld_seconds,
        "rdp_epsilon": rdp_eps,
        "rdp_epsilon_seconds_one_core": rdp_seconds,
        "pld_plan_target_epsilon_1_noise_multiplier": plan_sigma,
        "pld_plan_seconds_one_core": plan_seconds,
        "noise_elements": len,
        "noise_ns_per_element_one_core": noise_one_core * 1e9 / len as f64,
        "noise_ns_per_element_all_cores": noise_all_cores * 1e9 / len as f64,
        "threads": threads,
        "repeats": args.repeats,
    });
    if args.json {
        print_json(&report)
    } else {
        println!(
            "PLD ε (q={q}, σ={sigma}, T={steps}, δ={delta}) = {pld_eps:.6} in {pld_seconds:.4} s (one core)"
        );
        println!(
            "RDP ε = {rdp_eps:.6} in {:.3} ms (one core)",
            rdp_seconds * 1e3
        );
        println!("PLD plan for ε ≤ 1: σ = {plan_sigma} in {plan_seconds:.3} s (one core)");
        println!(
            "noise: {:.2} ns/element on one core, {:.2} ns/element on {threads} threads",
            noise_one_core * 1e9 / len as f64,
            noise_all_cores * 1e9 / len as f64
        );
        Ok(())
    }
}
