//! `confide bench secagg`: one whole secure-aggregation round in process (every client and the server), timed per
//! side and per stage, the aggregate checked against the plain sum; both threat models and the malicious overhead.
use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::ValueEnum;
use confide_common::secagg::crypto::{Secret32, prg_keystream_only};
use confide_common::secagg::identity::survivors_statement;
use confide_common::secagg::{
    IdentityKey, Roster, RoundOutcome, RoundStage, SecAggClient, SecAggParams, SecAggServer,
    SecurityRequirements, ThreatModel,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

mod report;
use report::{
    ClientCosts, ComparisonReport, Cost, Overhead, PairTotals, SecaggReport, ServerCosts,
    SignatureCosts,
};

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphChoice {
    /// Every pair of clients masks (classic SecAgg).
    Complete,
    /// SecAgg+ Harary graph with degree derived from n, dropout rate and corrupt fraction (semi-honest only).
    Sparse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ThreatChoice {
    /// The server follows the protocol (four stages, no signatures).
    SemiHonest,
    /// The server may deviate: signatures, verifiable shares, share verification and consistency check.
    Malicious,
    /// Both, one after the other, and the malicious mode's overhead.
    Both,
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
    /// Which server the round withstands.
    #[arg(long, value_enum, default_value_t = ThreatChoice::Both)]
    threat_model: ThreatChoice,
    /// With `--threat-model both`: run this many semi-honest / malicious pairs, alternately, and compute the
    /// overhead from the median totals (the unmasking PRG dominates both and swings with the machine's load).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
    /// Print one JSON object on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
}

impl SecaggArgs {
    /// The in-process round `bench federation` compares with: no progress output, the semi-honest model its
    /// simulated participants run.
    pub(super) fn quiet(participants: u32, params: u32, dropout: f64, graph: GraphChoice) -> Self {
        Self {
            participants,
            params,
            dropout,
            graph,
            corrupt: 0.05,
            bits: 32,
            threat_model: ThreatChoice::SemiHonest,
            repeat: 1,
            json: true,
        }
    }
}

/// `confide bench secagg`: one round per threat model asked for (or `--repeat` pairs) and its report on stdout.
pub fn run(args: &SecaggArgs) -> anyhow::Result<()> {
    let print = |v: &dyn erased::Json| -> anyhow::Result<()> {
        println!("{}", v.to_json(args.json)?);
        Ok(())
    };
    match args.threat_model {
        ThreatChoice::SemiHonest => print(&bench_secagg(args, ThreatModel::SemiHonest)?),
        ThreatChoice::Malicious => print(&bench_secagg(args, ThreatModel::Malicious)?),
        ThreatChoice::Both => {
            let mut pairs = Vec::new();
            let mut last = None;
            for i in 0..args.repeat {
                if !args.json && args.repeat > 1 {
                    eprintln!("pair {} of {}", i + 1, args.repeat);
                }
                let semi_honest = bench_secagg(args, ThreatModel::SemiHonest)?;
                let malicious = bench_secagg(args, ThreatModel::Malicious)?;
                pairs.push(PairTotals {
                    semi_honest_client: semi_honest.client.total,
                    malicious_client: malicious.client.total,
                    semi_honest_server: semi_honest.server.total,
                    malicious_server: malicious.server.total,
                });
                last = Some((semi_honest, malicious));
            }
            let (semi_honest, malicious) = last.context("no pair was run")?;
            print(&ComparisonReport {
                semi_honest,
                malicious,
                malicious_overhead: Overhead::of_medians(&pairs),
                pairs,
            })
        }
    }
}

/// Pretty or compact JSON of any report.
mod erased {
    pub trait Json {
        fn to_json(&self, compact: bool) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self, compact: bool) -> serde_json::Result<String> {
            if compact {
                serde_json::to_string(self)
            } else {
                serde_json::to_string_pretty(self)
            }
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
    if let Ok(style) = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// CPU time consumed by this process (all threads), in seconds. On a shared machine the wall-clock ratios swing
/// with the neighbours' load; the CPU-time ratios show how much work the code does.
fn process_cpu_seconds() -> f64 {
    cpu_time::ProcessTime::try_now()
        .map(|t| t.as_duration().as_secs_f64())
        .unwrap_or(f64::NAN)
}

/// `f`'s result and its wall-clock and CPU cost.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let (wall, cpu) = (Instant::now(), process_cpu_seconds());
    let out = f();
    let cost = Cost {
        wall: wall.elapsed().as_secs_f64(),
        cpu: process_cpu_seconds() - cpu,
    };
    (out, cost)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median cost of one Ed25519 signature, one strict verification over a 32-byte statement, and one verification
/// within a set of 100 verified at once (all in microseconds, wall-clock).
fn signature_costs(rng: &mut rand::rngs::ThreadRng) -> anyhow::Result<(f64, f64, f64)> {
    const SET: usize = 100;
    let keys: Vec<IdentityKey> = (0..SET).map(|_| IdentityKey::generate(rng)).collect();
    let roster = Roster::new(keys.iter().map(|k| k.public()).collect())?;
    let statement = survivors_statement(&[1; 32], 1, &[0, 1, 2]);
    let (mut sign, mut verify) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let (sig, c) = timed(|| keys[0].sign(&statement));
        sign.push(c.wall);
        let (ok, c) = timed(|| roster.verify(0, &statement, &sig));
        ok?;
        verify.push(c.wall);
    }
    let sigs: Vec<_> = keys.iter().map(|k| k.sign(&statement)).collect();
    let items: Vec<_> = sigs
        .iter()
        .enumerate()
        .map(|(i, sig)| (i as u32, statement, sig))
        .collect();
    let mut batch = Vec::new();
    for _ in 0..20 {
        let (ok, c) = timed(|| roster.verify_all(&items));
        ok?;
        batch.push(c.wall / SET as f64);
    }
    Ok((
        median(sign) * 1e6,
        median(verify) * 1e6,
        median(batch) * 1e6,
    ))
}

pub(super) fn bench_secagg(
    args: &SecaggArgs,
    threat_model: ThreatModel,
) -> anyhow::Result<SecaggReport> {
    ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout must be in [0, 1)"
    );
    let (n, m) = (args.participants, args.params);
    let mut rng = rand::rng();
    let mut graph_seed = [0u8; 32];
    rand::Rng::fill_bytes(&mut rng, &mut graph_seed);
    let malicious = threat_model == ThreatModel::Malicious;
    let identities: Vec<IdentityKey> = if malicious {
        (0..n).map(|_| IdentityKey::generate(&mut rng)).collect()
    } else {
        Vec::new()
    };
    let roster = Roster::new(identities.iter().map(|k| k.public()).collect())?;
    let req = SecurityRequirements {
        participants: n,
        dropout_rate: args.dropout,
        corrupt_fraction: args.corrupt,
        sparse: matches!(args.graph, GraphChoice::Sparse),
        threat_model,
    };
    let params = SecAggParams::derive(1, &req, m, args.bits, graph_seed, roster)
        .context("deriving round parameters")?;
    let graph = params.neighbour_graph()?;
    let total = Instant::now();
    let hidden = args.json;
    if !hidden {
        eprintln!(
            "{threat_model:?} round: n = {n}, m = {m}, t = {}",
            params.threshold
        );
    }

    // The PRG bound: ChaCha20 keystream for one M-element vector on one core. The machine is shared, so it is
    // measured again right before each timed step and each step is compared with the measurement next to it.
    let seed = Secret32::random(&mut rng);
    let (mut prg_samples, mut prg_cpu_samples) = (Vec::new(), Vec::new());
    let mut measure_prg = |reps: usize| {
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (_, c) = timed(|| std::hint::black_box(prg_keystream_only(&seed, m as usize)));
            wall.push(c.wall);
            cpu.push(c.cpu);
        }
        prg_samples.extend(&wall);
        prg_cpu_samples.extend(&cpu);
        (median(wall), median(cpu))
    };
    measure_prg(3);

    let (mut client, mut server_cost) = (ClientCosts::default(), ServerCosts::default());
    let mut server = SecAggServer::new(params.clone())?;
    let mut clients = Vec::with_capacity(n as usize);
    for u in 0..n {
        let (started, c) = timed(|| match identities.get(u as usize) {
            Some(id) => SecAggClient::with_identity(params.clone(), u, id.clone(), &mut rng),
            None => SecAggClient::new(params.clone(), u, &mut rng),
        });
        let (client_state, msg) = started?;
        client.advertise_keys += c;
        let (r, c) = timed(|| server.handle_advertise_keys(&msg));
        r?;
        server_cost.advertise_keys += c;
        clients.push(client_state);
    }
    let (r, c) = timed(|| server.close_stage());
    r?;
    server_cost.advertise_keys += c;
    let dir = server.key_directory().context("no key directory")?;

    let pb = progress(u64::from(n), "ShareKeys", hidden);
    for cl in &mut clients {
        let (msg, c) = timed(|| cl.handle_key_directory(&dir, &mut rng));
        let msg = msg?;
        client.share_keys += c;
        let (r, c) = timed(|| server.handle_share_keys(&msg));
        r?;
        server_cost.share_keys += c;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (r, c) = timed(|| server.close_stage());
    r?;
    server_cost.share_keys += c;

    // Drop a pseudo-random ⌊dropout·n⌋ clients right after they dealt.
    let dropped_count = (args.dropout * f64::from(n)).floor() as usize;
    let mut order: Vec<u32> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
    let dropped: BTreeSet<u32> = order[..dropped_count].iter().copied().collect();
    let survivors = n as usize - dropped_count;

    if malicious {
        ensure!(
            server.stage() == RoundStage::ShareVerification,
            "round aborted after ShareKeys"
        );
        let pb = progress(survivors as u64, "ShareVerification", hidden);
        for cl in clients.iter_mut().filter(|c| !dropped.contains(&c.id())) {
            let routed = server.routed_shares(cl.id())?;
            let (msg, c) = timed(|| cl.verify_routed_shares(&routed, &mut rng));
            let msg = msg?;
            ensure!(msg.complaints.is_empty(), "an honest client complained");
            client.share_verification += c;
            let (r, c) = timed(|| server.handle_share_verification(&msg));
            r?;
            server_cost.share_verification += c;
            pb.inc(1);
        }
        pb.finish_and_clear();
        let (r, c) = timed(|| server.close_stage());
        r?;
        server_cost.share_verification += c;
    }
    ensure!(
        server.stage() == RoundStage::MaskedInputCollection,
        "round aborted before MaskedInputCollection"
    );

    let ring_mask = if args.bits == 32 {
        u32::MAX
    } else {
        (1u32 << args.bits) - 1
    };
    let mut plain_sum = vec![0u32; m as usize];
    let mut input = vec![0u32; m as usize];
    let mut inputs_rng = SplitMix(0x5eed);
    let pb = progress(survivors as u64, "Masking", hidden);
    let (mut mask_bound, mut mask_cpu_bound, mut vectors_total) = (0.0, 0.0, 0usize);
    let go = server.masked_input_request();
    for cl in clients.iter_mut().filter(|c| !dropped.contains(&c.id())) {
        for (x, s) in input.iter_mut().zip(plain_sum.iter_mut()) {
            *x = (inputs_rng.next() as u32) & ring_mask;
            *s = s.wrapping_add(*x);
        }
        let vectors = 1 + graph
            .neighbours(cl.id())
            .iter()
            .filter(|v| server.u2().contains(v))
            .count();
        let routed = if malicious {
            None
        } else {
            Some(server.routed_shares(cl.id())?)
        };
        let (prg_wall, prg_cpu) = measure_prg(1);
        let (masked, c) = timed(|| match (&routed, &go) {
            (Some(r), _) => cl.handle_routed_shares(r, &input),
            (None, Some(req)) => cl.handle_masked_input_request(req, &input),
            (None, None) => Err(confide_common::secagg::SecAggError::RoundEnded),
        });
        let masked = masked?;
        client.masking += c;
        mask_bound += vectors as f64 * prg_wall;
        mask_cpu_bound += vectors as f64 * prg_cpu;
        vectors_total += vectors;
        let bytes = masked.encode();
        let (r, c) = timed(|| server.handle_masked_input_bytes(&bytes));
        r?;
        server_cost.masked_input_collection += c;
        pb.inc(1);
    }
    pb.finish_and_clear();
    for s in &mut plain_sum {
        *s &= ring_mask;
    }
    let server_state_bytes = server.encode().len();
    let (r, c) = timed(|| server.close_stage());
    r?;
    server_cost.masked_input_collection += c;

    let mut responses = Vec::with_capacity(survivors);
    if malicious {
        let req = server
            .consistency_check_request()
            .context("no consistency-check request")?;
        for cl in clients.iter_mut().filter(|c| !dropped.contains(&c.id())) {
            let (msg, c) = timed(|| cl.handle_consistency_check_request(&req));
            let msg = msg?;
            client.consistency_check += c;
            let (r, c) = timed(|| server.handle_consistency_signature(&msg));
            r?;
            server_cost.consistency_check += c;
        }
        let (r, c) = timed(|| server.close_stage());
        r?;
        server_cost.consistency_check += c;
        let signed = server.signed_survivors().context("no signed survivors")?;
        for cl in clients.iter_mut().filter(|c| !dropped.contains(&c.id())) {
            let (resp, c) = timed(|| cl.handle_signed_survivors(&signed));
            responses.push(resp?);
            client.unmasking += c;
        }
    } else {
        let req = server.unmasking_request().context("no unmasking request")?;
        for cl in clients.iter_mut().filter(|c| !dropped.contains(&c.id())) {
            let (resp, c) = timed(|| cl.handle_unmasking_request(&req));
            responses.push(resp?);
            client.unmasking += c;
        }
    }
    ensure!(
        server.stage() == RoundStage::Unmasking,
        "round aborted before Unmasking"
    );
    for resp in &responses {
        let (r, c) = timed(|| server.handle_unmasking_response(resp));
        r?;
        server_cost.unmasking += c;
    }
    let server_unmask_vectors = server.unmask_vector_count();
    if !hidden {
        eprintln!("unmasking: {server_unmask_vectors} mask vectors of {m} elements ...");
    }
    let (prg_wall_before, prg_cpu_before) = measure_prg(3);
    let (closed, unmask_close) = timed(|| server.close_stage());
    closed?;
    server_cost.unmasking += unmask_close;
    let (prg_wall_after, prg_cpu_after) = measure_prg(3);
    let server_prg = (prg_wall_before + prg_wall_after) / 2.0;
    let server_prg_cpu = (prg_cpu_before + prg_cpu_after) / 2.0;
    let correct = match server.outcome() {
        Some(RoundOutcome::Completed(sum)) => sum == plain_sum,
        Some(RoundOutcome::Aborted { reason }) => bail!("round aborted: {reason}"),
        None => bail!("round did not end"),
    };

    let (client_mask_wall, client_mask_cpu) = (client.masking.wall, client.masking.cpu);
    client.advertise_keys = client.advertise_keys.per(n as usize);
    client.share_keys = client.share_keys.per(n as usize);
    client.share_verification = client.share_verification.per(survivors);
    client.masking = client.masking.per(survivors);
    client.consistency_check = client.consistency_check.per(survivors);
    client.unmasking = client.unmasking.per(survivors);
    for c in [
        client.advertise_keys,
        client.share_keys,
        client.share_verification,
        client.masking,
        client.consistency_check,
        client.unmasking,
    ] {
        client.total += c;
    }
    for c in [
        server_cost.advertise_keys,
        server_cost.share_keys,
        server_cost.share_verification,
        server_cost.masked_input_collection,
        server_cost.consistency_check,
        server_cost.unmasking,
    ] {
        server_cost.total += c;
    }
    let signatures = if malicious {
        let (sign, verify, batch_verify) = signature_costs(&mut rng)?;
        let signers = server.signers().len();
        Some(SignatureCosts {
            sign_microseconds: sign,
            verify_microseconds: verify,
            batch_verify_microseconds: batch_verify,
            // AdvertiseKeys, ShareKeys, ShareVerification, ConsistencyCheck.
            signatures_per_client: 4,
            // The key directory (U1), the t acknowledgements and the forwarded survivor signatures.
            verifications_per_client: server.u1().len() + params.threshold as usize + signers,
            // Every AdvertiseKeys, ShareKeys, ShareVerification and ConsistencySignature.
            verifications_by_server: server.u1().len() + server.u2().len() + survivors + signers,
        })
    } else {
        None
    };
    Ok(SecaggReport {
        threat_model,
        correct,
        participants: n,
        params: m,
        dropout: args.dropout,
        graph: args.graph,
        degree: graph.degree(),
        threshold: params.threshold,
        max_corrupt: params.max_corrupt,
        bits: args.bits,
        threads: rayon::current_num_threads(),
        dropped: dropped_count,
        survivors,
        prg_vector_seconds: median(prg_samples),
        prg_vector_cpu_seconds: median(prg_cpu_samples),
        client,
        client_mask_vectors: vectors_total as f64 / survivors as f64,
        client_mask_prg_ratio: client_mask_wall / mask_bound,
        client_mask_prg_cpu_ratio: client_mask_cpu / mask_cpu_bound,
        server: server_cost,
        server_unmask_vectors,
        server_unmask_prg_ratio: unmask_close.wall / (server_unmask_vectors as f64 * server_prg),
        server_unmask_prg_cpu_ratio: unmask_close.cpu
            / (server_unmask_vectors as f64 * server_prg_cpu),
        server_state_bytes,
        signatures,
        total_seconds: total.elapsed().as_secs_f64(),
    })
}
