//! `confide bench ...`: benchmarks that run the real code in process and print real measurements as JSON.
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::{Subcommand, ValueEnum};
use confide_common::secagg::crypto::{Secret32, prg_keystream_only};
use confide_common::secagg::{
    RoundOutcome, RoundStage, SecAggClient, SecAggParams, SecAggServer, SecurityRequirements,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Run one whole secure-aggregation round in process (all clients and the server) and time each side.
    ///
    /// Clients that drop out (a fraction `--dropout` of all) do so after ShareKeys, the costliest case for the
    /// server: it must rebuild their mask keys and remove their pairwise masks. The aggregate is checked against
    /// the plain sum of the surviving inputs.
    Secagg(SecaggArgs),
    /// Run R rounds over real HTTP: a real `confide-coordinator` process (SQLite or Postgres) and N simulated
    /// participants speaking the API with the real secure-aggregation client; every published model is checked
    /// and each round is timed per stage and compared with `bench secagg` for the same (N, M, dropout, graph).
    Federation(super::federation::FederationArgs),
    /// Upload the same body (4 MB by default) to a plain-HTTP and an HTTPS coordinator on loopback, alternately,
    /// and compare the median times (the cost of TLS).
    Transport(super::bench_transport::TransportArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphChoice {
    /// Every pair of clients masks (classic SecAgg).
    Complete,
    /// SecAgg+ Harary graph with degree derived from n, dropout rate and corrupt fraction.
    Sparse,
}

#[derive(clap::Args)]
pub struct SecaggArgs {
    /// Number of participants N.
    #[arg(long, default_value_t = 100)]
    participants: u32,
    /// Vector length M (ring elements per input).
    #[arg(long, default_value_t = 1_000_000)]
    params: u32,
    /// Fraction of participants that drop out after ShareKeys (also the expected dropout rate for deriving t).
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Neighbour graph.
    #[arg(long, value_enum, default_value_t = GraphChoice::Complete)]
    graph: GraphChoice,
    /// Tolerated fraction of corrupt participants (for deriving the threshold and graph degree).
    #[arg(long, default_value_t = 0.05)]
    corrupt: f64,
    /// Ring Z_{2^bits}.
    #[arg(long, default_value_t = 32)]
    bits: u32,
    /// Print one JSON object on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
}

impl SecaggArgs {
    /// The in-process round `bench federation` compares with: no progress output.
    pub(super) fn quiet(participants: u32, params: u32, dropout: f64, graph: GraphChoice) -> Self {
        Self {
            participants,
            params,
            dropout,
            graph,
            corrupt: 0.05,
            bits: 32,
            json: true,
        }
    }
}

#[derive(Serialize)]
pub(super) struct SecaggReport {
    pub(super) correct: bool,
    participants: u32,
    params: u32,
    dropout: f64,
    graph: GraphChoice,
    pub(super) degree: u32,
    pub(super) threshold: u32,
    bits: u32,
    threads: usize,
    dropped: usize,
    pub(super) survivors: usize,
    prg_vector_seconds: f64,
    pub(super) client_share_keys_seconds: f64,
    pub(super) client_mask_seconds: f64,
    client_mask_vectors: f64,
    client_mask_prg_ratio: f64,
    client_unmask_seconds: f64,
    server_ingest_seconds: f64,
    pub(super) server_unmask_seconds: f64,
    server_unmask_vectors: usize,
    server_unmask_prg_ratio: f64,
    server_state_bytes: usize,
    pub(super) total_seconds: f64,
    /// The same ratios in process CPU time (all threads), robust to other load on a shared machine.
    prg_vector_cpu_seconds: f64,
    client_share_keys_cpu_seconds: f64,
    client_mask_prg_cpu_ratio: f64,
    server_unmask_prg_cpu_ratio: f64,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Federation(args) => super::federation::run(args),
        BenchCommand::Secagg(args) => {
            let report = bench_secagg(&args)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        BenchCommand::Transport(args) => {
            let json = super::bench_transport::wants_json(&args);
            let report = super::bench_transport::run(args)?;
            super::bench_transport::print(&report, json)
        }
    }
}

/// SplitMix64: a fast, non-cryptographic generator for the benchmark's plaintext inputs.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn progress(len: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// CPU time consumed by this process (all threads), in seconds. On a shared machine the wall-clock ratios swing
/// with the neighbours' load; the CPU-time ratios show how much work the code does per PRG vector.
fn process_cpu_seconds() -> f64 {
    cpu_time::ProcessTime::try_now()
        .map(|t| t.as_duration().as_secs_f64())
        .unwrap_or(f64::NAN)
}

/// Wall-clock and CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (wall, cpu) = (Instant::now(), process_cpu_seconds());
    let out = f();
    (
        out,
        wall.elapsed().as_secs_f64(),
        process_cpu_seconds() - cpu,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn bench_secagg(args: &SecaggArgs) -> anyhow::Result<SecaggReport> {
    ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout must be in [0, 1)"
    );
    let n = args.participants;
    let m = args.params;
    let mut rng = rand::rng();
    let mut graph_seed = [0u8; 32];
    rand::Rng::fill_bytes(&mut rng, &mut graph_seed);
    let req = SecurityRequirements {
        participants: n,
        dropout_rate: args.dropout,
        corrupt_fraction: args.corrupt,
        sparse: matches!(args.graph, GraphChoice::Sparse),
    };
    let params = SecAggParams::derive(1, &req, m, args.bits, graph_seed)
        .context("deriving round parameters")?;
    let graph = params.neighbour_graph()?;
    let threshold = params.threshold;
    let total = Instant::now();
    let hidden = args.json;

    // The PRG bound: ChaCha20 keystream for one M-element vector on one core. The machine is shared, so it is
    // measured again right before each timed step and each step is compared with the measurement next to it.
    let seed = Secret32::random(&mut rng);
    let mut prg_samples = Vec::new();
    let mut prg_cpu_samples = Vec::new();
    // Returns the median wall-clock and CPU seconds of `reps` single-core keystream expansions.
    let mut measure_prg = |reps: usize| {
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (_, w, c) = timed(|| std::hint::black_box(prg_keystream_only(&seed, m as usize)));
            wall.push(w);
            cpu.push(c);
        }
        prg_samples.extend(&wall);
        prg_cpu_samples.extend(&cpu);
        (median(wall), median(cpu))
    };
    measure_prg(3);

    let mut server = SecAggServer::new(params.clone())?;
    let mut clients = Vec::with_capacity(n as usize);
    for u in 0..n {
        let (c, msg) = SecAggClient::new(params.clone(), u, &mut rng)?;
        server.handle_advertise_keys(&msg)?;
        clients.push(c);
    }
    server.close_stage()?;
    let dir = server.key_directory().context("no key directory")?;

    let pb = progress(u64::from(n), "ShareKeys", hidden);
    let (mut share_keys_total, mut share_keys_cpu_total) = (0.0, 0.0);
    for c in &mut clients {
        let (msg, wall, cpu) = timed(|| c.handle_key_directory(&dir, &mut rng));
        let msg = msg?;
        share_keys_total += wall;
        share_keys_cpu_total += cpu;
        server.handle_share_keys(&msg)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    server.close_stage()?;
    ensure!(
        server.stage() == RoundStage::MaskedInputCollection,
        "round aborted after ShareKeys"
    );

    // Drop a pseudo-random ⌊dropout·n⌋ clients before they send their masked input.
    let dropped_count = (args.dropout * f64::from(n)).floor() as usize;
    let mut order: Vec<u32> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
    let dropped: std::collections::BTreeSet<u32> = order[..dropped_count].iter().copied().collect();

    let ring_mask = if args.bits == 32 {
        u32::MAX
    } else {
        (1u32 << args.bits) - 1
    };
    let mut plain_sum = vec![0u32; m as usize];
    let mut input = vec![0u32; m as usize];
    let mut inputs_rng = SplitMix(0x5eed);
    let pb = progress(u64::from(n) - dropped_count as u64, "Masking", hidden);
    let (mut mask_total, mut mask_bound, mut vectors_total, mut ingest_total) =
        (0.0, 0.0, 0usize, 0.0);
    let (mut mask_cpu_total, mut mask_cpu_bound) = (0.0, 0.0);
    for c in &mut clients {
        let u = c.id();
        if dropped.contains(&u) {
            continue;
        }
        for (x, s) in input.iter_mut().zip(plain_sum.iter_mut()) {
            *x = (inputs_rng.next() as u32) & ring_mask;
            *s = s.wrapping_add(*x);
        }
        let routed = server.routed_shares(u)?;
        let vectors = 1 + routed.shares.len();
        let (prg_wall, prg_cpu) = measure_prg(1);
        let (masked, wall, cpu) = timed(|| c.handle_routed_shares(&routed, &input));
        let masked = masked?;
        mask_total += wall;
        mask_bound += vectors as f64 * prg_wall;
        mask_cpu_total += cpu;
        mask_cpu_bound += vectors as f64 * prg_cpu;
        vectors_total += vectors;
        let bytes = masked.encode();
        let t = Instant::now();
        server.handle_masked_input_bytes(&bytes)?;
        ingest_total += t.elapsed().as_secs_f64();
        pb.inc(1);
    }
    pb.finish_and_clear();
    let survivors = n as usize - dropped_count;
    for s in &mut plain_sum {
        *s &= ring_mask;
    }
    let server_state_bytes = server.encode().len();
    server.close_stage()?;
    ensure!(
        server.stage() == RoundStage::Unmasking,
        "round aborted after MaskedInputCollection"
    );
    let req = server.unmasking_request().context("no unmasking request")?;
    let mut unmask_client_total = 0.0;
    for c in &mut clients {
        if dropped.contains(&c.id()) {
            continue;
        }
        let t = Instant::now();
        let resp = c.handle_unmasking_request(&req)?;
        unmask_client_total += t.elapsed().as_secs_f64();
        server.handle_unmasking_response(&resp)?;
    }
    let server_unmask_vectors = server.unmask_vector_count();
    if !hidden {
        eprintln!("unmasking: {server_unmask_vectors} mask vectors of {m} elements ...");
    }
    let (prg_wall_before, prg_cpu_before) = measure_prg(3);
    let (closed, server_unmask_seconds, server_unmask_cpu) = timed(|| server.close_stage());
    closed?;
    let (prg_wall_after, prg_cpu_after) = measure_prg(3);
    let server_prg = (prg_wall_before + prg_wall_after) / 2.0;
    let server_prg_cpu = (prg_cpu_before + prg_cpu_after) / 2.0;
    let prg_vector_seconds = median(prg_samples);
    let prg_vector_cpu_seconds = median(prg_cpu_samples);
    let correct = match server.outcome() {
        Some(RoundOutcome::Completed(sum)) => sum == plain_sum,
        Some(RoundOutcome::Aborted { reason }) => bail!("round aborted: {reason}"),
        None => bail!("round did not end"),
    };
    let s = survivors as f64;
    Ok(SecaggReport {
        correct,
        participants: n,
        params: m,
        dropout: args.dropout,
        graph: args.graph,
        degree: graph.degree(),
        threshold,
        bits: args.bits,
        threads: rayon::current_num_threads(),
        dropped: dropped_count,
        survivors,
        prg_vector_seconds,
        client_share_keys_seconds: share_keys_total / f64::from(n),
        client_mask_seconds: mask_total / s,
        client_mask_vectors: vectors_total as f64 / s,
        client_mask_prg_ratio: mask_total / mask_bound,
        client_unmask_seconds: unmask_client_total / s,
        server_ingest_seconds: ingest_total / s,
        server_unmask_seconds,
        server_unmask_vectors,
        server_unmask_prg_ratio: server_unmask_seconds
            / (server_unmask_vectors as f64 * server_prg),
        server_state_bytes,
        total_seconds: total.elapsed().as_secs_f64(),
        prg_vector_cpu_seconds,
        client_share_keys_cpu_seconds: share_keys_cpu_total / f64::from(n),
        client_mask_prg_cpu_ratio: mask_cpu_total / mask_cpu_bound,
        server_unmask_prg_cpu_ratio: server_unmask_cpu
            / (server_unmask_vectors as f64 * server_prg_cpu),
    })
}
