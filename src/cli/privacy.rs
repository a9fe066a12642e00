//! `confide privacy ...`: the privacy calculator. ε of a DP-SGD run, the noise needed for a target ε, and a
//! benchmark of the accountants and the noise sampler. Results are JSON on stdout; errors go to stderr.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use confide_common::dp::{
    AccountantKind, EpsilonBounds, GaussianNoise, PldAccountant, PrivacyEvent, PrivacyLedger,
    RdpAccountant, analytic_gaussian, noise_multiplier_for_target,
};
use serde_json::json;

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// ε of `steps` DP-SGD steps with Poisson sampling rate q and noise multiplier σ, at a given δ: `epsilon` is the
    /// certified upper bound (what budgets enforce), `epsilon_lower` the PLD's certified lower bound.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier σ (to 0.001) that keeps ε ≤ a target for (δ, q, steps).
    Plan(PlanArgs),
    /// A study's privacy report from the coordinator: per participant the budget, ε spent and remaining, and the
    /// rounds it can still take part in.
    #[command(after_help = super::ops::EXIT_CODES_HELP)]
    Report(super::ops::privacy::ReportArgs),
    /// Time the accountants (T = 10,000) and the noise sampler, and show the PLD's upper/lower gap; prints
    /// measurements.
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
        PrivacyCommand::Report(args) => Ok(super::ops::block_on(super::ops::privacy::run(args))?),
    }
}

fn epsilon(args: EpsilonArgs) -> anyhow::Result<()> {
    let event = PrivacyEvent::SubsampledGaussian {
        sampling_rate: args.sampling_rate,
        noise_multiplier: args.noise_multiplier,
        steps: args.steps,
    };
    let ledger = PrivacyLedger {
        events: vec![event],
    };
    // The PLD's upper bound is what budgets enforce; its lower bound shows how tight that is. RDP has no lower bound.
    let (eps, lower) = match args.accountant {
        AccountantKind::Pld => {
            let b = ledger.epsilon_bounds(args.delta)?;
            (b.upper, Some(b.lower))
        }
        AccountantKind::Rdp => (ledger.epsilon(args.delta, args.accountant)?, None),
    };
    print_json(&json!({
        "epsilon": eps,
        "epsilon_lower": lower,
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

/// CPU time consumed so far by the calling thread (`thread = true`) or the whole process, in seconds.
/// The machine may be shared, so wall time alone would measure the neighbours as much as the code.
fn cpu_seconds(thread: bool) -> f64 {
    let spent = if thread {
        cpu_time::ThreadTime::try_now().map(|t| t.as_duration())
    } else {
        cpu_time::ProcessTime::try_now().map(|t| t.as_duration())
    };
    spent.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// A timing: medians over the repeats of wall-clock and CPU seconds.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Runs `f` `repeats` times; CPU time is the calling thread's (`thread_cpu`) or the process's.
fn measure(repeats: usize, thread_cpu: bool, mut f: impl FnMut()) -> Timing {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..repeats.max(1) {
        let cpu0 = cpu_seconds(thread_cpu);
        let start = Instant::now();
        f();
        walls.push(start.elapsed().as_secs_f64());
        cpus.push(cpu_seconds(thread_cpu) - cpu0);
    }
    walls.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    Timing {
        wall: walls[walls.len() / 2],
        cpu: cpus[cpus.len() / 2],
    }
}

/// Settings whose upper/lower gap the benchmark reports beside the timed one: a q = 1 case (with the exact
/// Gaussian ε) and a small-q one.
const GAP_CASES: [(f64, f64, u64); 2] = [(1.0, 2.0, 100), (0.001, 2.0, 5000)];

/// One bench row for a PLD setting: bounds, gap and, at q = 1, the exact Gaussian ε.
fn gap_row(q: f64, sigma: f64, steps: u64, delta: f64, b: &EpsilonBounds) -> serde_json::Value {
    let exact = (q == 1.0)
        .then(|| {
            analytic_gaussian::epsilon_for_delta(
                analytic_gaussian::composed_mu(sigma, steps),
                delta,
            )
            .ok()
        })
        .flatten();
    json!({
        "sampling_rate": q, "noise_multiplier": sigma, "steps": steps, "delta": delta,
        "upper": b.upper, "lower": b.lower, "relative_gap": b.relative_gap(), "exact_gaussian": exact,
    })
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
    let mut pld_bounds = None;
    let mut rdp_eps = 0.0;
    // Both bounds are computed together (the upper alone is not cheaper: they share the curve evaluations).
    let pld_time = one_core.install(|| {
        measure(args.repeats, true, || {
            pld_bounds = Some(pld.epsilon_bounds(&events, delta));
        })
    });
    let pld_bounds = pld_bounds
        .context("the PLD measurement did not run")?
        .context("PLD bounds for the benchmark setting")?;
    let rdp_time = one_core.install(|| {
        measure(args.repeats, true, || {
            rdp_eps = rdp.epsilon(&events, delta).unwrap_or(f64::NAN);
        })
    });
    let mut plan_sigma = 0.0;
    let plan_time = one_core.install(|| {
        measure(1, true, || {
            plan_sigma = noise_multiplier_for_target(1.0, delta, q, steps, AccountantKind::Pld)
                .unwrap_or(f64::NAN);
        })
    });
    let mut gaps = vec![gap_row(q, sigma, steps, delta, &pld_bounds)];
    for (gq, gsigma, gsteps) in GAP_CASES {
        let event = [PrivacyEvent::SubsampledGaussian {
            sampling_rate: gq,
            noise_multiplier: gsigma,
            steps: gsteps,
        }];
        let b = pld
            .epsilon_bounds(&event, delta)
            .with_context(|| format!("PLD bounds for q={gq} σ={gsigma} T={gsteps}"))?;
        gaps.push(gap_row(gq, gsigma, gsteps, delta, &b));
    }

    let len = 1usize << 24;
    let mut buf = vec![0.0f32; len];
    let mut noise = GaussianNoise::from_os_entropy()?;
    let noise_one =
        one_core.install(|| measure(args.repeats, true, || noise.add_to_f32(&mut buf, 1.0)));
    let noise_all = measure(args.repeats, false, || noise.add_to_f32(&mut buf, 1.0));
    let threads = rayon::current_num_threads();
    let per_element = |t: f64| t * 1e9 / len as f64;

    let report = json!({
        "setting": {"sampling_rate": q, "noise_multiplier": sigma, "steps": steps, "delta": delta},
        "pld_epsilon": pld_bounds.upper,
        "pld_epsilon_lower": pld_bounds.lower,
        "pld_relative_gap": pld_bounds.relative_gap(),
        "pld_epsilon_seconds_one_core": {"wall": pld_time.wall, "cpu": pld_time.cpu},
        "pld_gaps": gaps,
        "rdp_epsilon": rdp_eps,
        "rdp_epsilon_seconds_one_core": {"wall": rdp_time.wall, "cpu": rdp_time.cpu},
        "pld_plan_target_epsilon_1": {"noise_multiplier": plan_sigma, "wall": plan_time.wall, "cpu": plan_time.cpu},
        "noise_elements": len,
        "noise_add_ns_per_element_one_core": {"wall": per_element(noise_one.wall), "cpu": per_element(noise_one.cpu)},
        "noise_add_ns_per_element_all_threads": {
            "wall": per_element(noise_all.wall),
            "cpu_total": per_element(noise_all.cpu),
            "threads": threads,
        },
        "repeats": args.repeats,
        "note": "cpu = CPU seconds of the measuring thread (one core) or of the whole process; wall also counts waiting on a shared machine; PLD timings cover both bounds",
    });
    if args.json {
        return print_json(&report);
    }
    println!(
        "PLD ε (q={q}, σ={sigma}, T={steps}, δ={delta}) ∈ [{:.6}, {:.6}] (gap {:.2e}): {:.4} s CPU, {:.4} s wall (one core, both bounds)",
        pld_bounds.lower,
        pld_bounds.upper,
        pld_bounds.relative_gap(),
        pld_time.cpu,
        pld_time.wall
    );
    for row in gaps.iter().skip(1) {
        let exact = match row["exact_gaussian"].as_f64() {
            Some(e) => format!(", exact Gaussian {e:.6}"),
            None => String::new(),
        };
        println!(
            "PLD ε (q={}, σ={}, T={}) ∈ [{:.6}, {:.6}] (gap {:.2e}){exact}",
            row["sampling_rate"],
            row["noise_multiplier"],
            row["steps"],
            row["lower"].as_f64().unwrap_or(f64::NAN),
            row["upper"].as_f64().unwrap_or(f64::NAN),
            row["relative_gap"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "RDP ε = {rdp_eps:.6}: {:.3} ms CPU, {:.3} ms wall (one core)",
        rdp_time.cpu * 1e3,
        rdp_time.wall * 1e3
    );
    println!(
        "PLD plan for ε ≤ 1: σ = {plan_sigma}: {:.3} s CPU, {:.3} s wall (one core)",
        plan_time.cpu, plan_time.wall
    );
    println!(
        "noise: {:.2} ns/element CPU on one core; {:.2} ns/element wall on {threads} threads",
        per_element(noise_one.cpu),
        per_element(noise_all.wall)
    );
    Ok(())
}
