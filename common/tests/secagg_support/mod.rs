//! Shared harness of the secure-aggregation tests: round set-ups for both threat models, a driver that runs a whole
//! round through the real state machines and wire encodings (with dropouts at any stage), and what an attacker
//! learns from revealed shares.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{
    AdvertiseKeys, Broadcast, GraphKind, IdentityKey, KeyDirectory, MaskedInputRequest, Roster,
    RoundOutcome, RoundStage, RoutedShares, SecAggClient, SecAggParams, SecAggServer,
    SignedSurvivors, ThreatModel, UnmaskingRequest, UnmaskingResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Round parameters plus, for malicious rounds, every participant's identity key (index = roster position).
#[derive(Clone)]
pub struct Setup {
    pub params: SecAggParams,
    pub identities: Vec<IdentityKey>,
}

/// A semi-honest round.
pub fn semi_honest(n: u32, t: u32, graph: GraphKind, len: u32, bits: u32) -> Setup {
    let params = SecAggParams {
        round_id: 42,
        participants: n,
        threshold: t,
        graph,
        graph_seed: [3; 32],
        vector_len: len,
        bits,
        threat_model: ThreatModel::SemiHonest,
        max_corrupt: 0,
        roster: Roster::default(),
    };
    params.validate().unwrap();
    Setup {
        params,
        identities: Vec::new(),
    }
}

/// A malicious-server round over the complete graph with fresh identities (from `seed`).
pub fn malicious(n: u32, t: u32, max_corrupt: u32, len: u32, bits: u32, seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1d);
    let identities: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
    let params = SecAggParams {
        round_id: 7_000 + seed % 1000,
        participants: n,
        threshold: t,
        graph: GraphKind::Complete,
        graph_seed: [0; 32],
        vector_len: len,
        bits,
        threat_model: ThreatModel::Malicious,
        max_corrupt,
        roster: Roster::new(identities.iter().map(|k| k.public()).collect()).unwrap(),
    };
    params.validate().unwrap();
    Setup { params, identities }
}

/// Starts participant `u`'s client with the constructor its round needs.
pub fn client(s: &Setup, u: u32, rng: &mut ChaCha20Rng) -> (SecAggClient, AdvertiseKeys) {
    match s.params.threat_model {
        ThreatModel::SemiHonest => SecAggClient::new(s.params.clone(), u, rng).unwrap(),
        ThreatModel::Malicious => {
            SecAggClient::with_identity(s.params.clone(), u, s.identities[u as usize].clone(), rng)
                .unwrap()
        }
    }
}

pub fn ring_mask(bits: u32) -> u32 {
    if bits == 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Who stops answering at which stage (stages a mode lacks are ignored).
#[derive(Default, Clone, Debug)]
pub struct Dropouts {
    pub advertise: Vec<u32>,
    pub share: Vec<u32>,
    pub verify: Vec<u32>,
    pub masked: Vec<u32>,
    pub consistency: Vec<u32>,
    pub unmask: Vec<u32>,
}

impl Dropouts {
    fn at(&self, stage: RoundStage) -> &[u32] {
        match stage {
            RoundStage::AdvertiseKeys => &self.advertise,
            RoundStage::ShareKeys => &self.share,
            RoundStage::ShareVerification => &self.verify,
            RoundStage::MaskedInputCollection => &self.masked,
            RoundStage::ConsistencyCheck => &self.consistency,
            _ => &self.unmask,
        }
    }
}

/// Spreads `count` dropouts over the stages of the round's mode, round robin, choosing pseudo-random participants.
pub fn spread_dropouts(s: &Setup, count: u32, rng: &mut ChaCha20Rng) -> Dropouts {
    let mut ids: Vec<u32> = (0..s.params.participants).collect();
    rand::seq::SliceRandom::shuffle(&mut ids[..], rng);
    let stages = RoundStage::sequence(s.params.threat_model);
    let mut d = Dropouts::default();
    for (i, &u) in ids.iter().take(count as usize).enumerate() {
        match stages[i % stages.len()] {
            RoundStage::AdvertiseKeys => d.advertise.push(u),
            RoundStage::ShareKeys => d.share.push(u),
            RoundStage::ShareVerification => d.verify.push(u),
            RoundStage::MaskedInputCollection => d.masked.push(u),
            RoundStage::ConsistencyCheck => d.consistency.push(u),
            _ => d.unmask.push(u),
        }
    }
    d
}

/// Persists and restores the server, as the coordinator does at every stage boundary.
pub fn persist(server: &mut SecAggServer) {
    let bytes = server.encode();
    *server = SecAggServer::decode(&bytes).unwrap();
    assert_eq!(server.encode(), bytes);
}

/// Runs a whole round through the wire encodings (the server parses every message as the coordinator would);
/// returns the outcome and the expected sum of U3's inputs.
pub fn run(
    s: &Setup,
    drops: &Dropouts,
    seed: u64,
) -> (RoundOutcome, Option<Vec<u32>>, SecAggServer) {
    let p = &s.params;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut server = SecAggServer::new(p.clone()).unwrap();
    let mut clients = Vec::new();
    let mut inputs = Vec::new();
    for u in 0..p.participants {
        let (c, msg) = client(s, u, &mut rng);
        clients.push(c);
        inputs.push(
            (0..p.vector_len)
                .map(|_| rng.next_u32() & ring_mask(p.bits))
                .collect::<Vec<u32>>(),
        );
        if !drops.advertise.contains(&u) {
            server.handle_message(msg.to_json().as_bytes()).unwrap();
        }
    }
    loop {
        server.close_stage().unwrap();
        persist(&mut server);
        let stage = server.stage();
        if matches!(stage, RoundStage::Completed | RoundStage::Aborted) {
            break;
        }
        let broadcasts = server.broadcasts().unwrap();
        for u in server.expected() {
            let c = &mut clients[u as usize];
            let b = broadcasts
                .iter()
                .find(|b| b.recipient().is_none_or(|r| r == u))
                .unwrap();
            let body: Vec<u8> = match (stage, b) {
                (RoundStage::ShareKeys, Broadcast::KeyDirectory(_)) => {
                    let dir = KeyDirectory::from_json(&b.to_json()).unwrap();
                    c.handle_key_directory(&dir, &mut rng)
                        .unwrap()
                        .to_json()
                        .into()
                }
                (RoundStage::ShareVerification, Broadcast::RoutedShares(_)) => {
                    let routed = RoutedShares::from_json(&b.to_json()).unwrap();
                    c.verify_routed_shares(&routed, &mut rng)
                        .unwrap()
                        .to_json()
                        .into()
                }
                (RoundStage::MaskedInputCollection, Broadcast::RoutedShares(_)) => {
                    let routed = RoutedShares::from_json(&b.to_json()).unwrap();
                    c.handle_routed_shares(&routed, &inputs[u as usize])
                        .unwrap()
                        .encode()
                }
                (RoundStage::MaskedInputCollection, Broadcast::MaskedInputRequest(_)) => {
                    let req = MaskedInputRequest::from_json(&b.to_json()).unwrap();
                    c.handle_masked_input_request(&req, &inputs[u as usize])
                        .unwrap()
                        .encode()
                }
                (RoundStage::ConsistencyCheck, Broadcast::ConsistencyCheckRequest(req)) => c
                    .handle_consistency_check_request(req)
                    .unwrap()
                    .to_json()
                    .into(),
                (RoundStage::Unmasking, Broadcast::UnmaskingRequest(_)) => {
                    let req = UnmaskingRequest::from_json(&b.to_json()).unwrap();
                    let resp = c.handle_unmasking_request(&req).unwrap();
                    UnmaskingResponse::from_json(&resp.to_json())
                        .unwrap()
                        .to_json()
                        .into()
                }
                (RoundStage::Unmasking, Broadcast::SignedSurvivors(_)) => {
                    let msg = SignedSurvivors::from_json(&b.to_json()).unwrap();
                    c.handle_signed_survivors(&msg).unwrap().to_json().into()
                }
                other => panic!("unexpected broadcast in stage {other:?}"),
            };
            if !drops.at(stage).contains(&u) {
                server.handle_message(&body).unwrap();
            }
        }
        let dropping = server
            .expected()
            .iter()
            .any(|u| drops.at(stage).contains(u));
        assert_eq!(server.ready_to_close(), !dropping, "stage {stage:?}");
    }
    let outcome = server.outcome().unwrap();
    let expected = matches!(outcome, RoundOutcome::Completed(_)).then(|| {
        let mut sum = vec![0u32; p.vector_len as usize];
        for &u in server.u3() {
            for (e, x) in sum.iter_mut().zip(&inputs[u as usize]) {
                *e = e.wrapping_add(*x) & ring_mask(p.bits);
            }
        }
        sum
    });
    (outcome, expected, server)
}

/// Runs a round and asserts that it completes with the exact sum.
pub fn assert_completes(s: &Setup, drops: &Dropouts, seed: u64) -> SecAggServer {
    let (outcome, expected, server) = run(s, drops, seed);
    match outcome {
        RoundOutcome::Completed(sum) => assert_eq!(
            Some(sum),
            expected,
            "n = {}, drops = {drops:?}",
            s.params.participants
        ),
        RoundOutcome::Aborted { reason } => panic!(
            "aborted: {reason} (n = {}, drops = {drops:?})",
            s.params.participants
        ),
    }
    server
}

/// The shares an attacker collected, by owner: which holders revealed a self-mask share and which a mask-key share.
#[derive(Default, Debug)]
pub struct Revealed {
    pub self_mask: BTreeMap<u32, BTreeSet<u32>>,
    pub mask_key: BTreeMap<u32, BTreeSet<u32>>,
}

impl Revealed {
    pub fn add(&mut self, r: &UnmaskingResponse) {
        for s in &r.self_mask_shares {
            self.self_mask.entry(s.owner).or_default().insert(r.sender);
        }
        for s in &r.mask_key_shares {
            self.mask_key.entry(s.owner).or_default().insert(r.sender);
        }
    }

    /// Also counts everything `holders` (corrupt, or who revealed their cipher key) hold, of both kinds.
    pub fn add_held_by(&mut self, holders: &[u32], owners: &[u32]) {
        for &o in owners {
            for &h in holders {
                self.self_mask.entry(o).or_default().insert(h);
                self.mask_key.entry(o).or_default().insert(h);
            }
        }
    }

    /// Whether `owner`'s self-mask secret can be rebuilt (t self-mask shares).
    pub fn self_mask_known(&self, owner: u32, t: usize) -> bool {
        self.self_mask.get(&owner).is_some_and(|s| s.len() >= t)
    }

    /// Whether `owner`'s mask key can be rebuilt (t mask-key shares, or the owner is corrupt).
    pub fn mask_key_known(&self, owner: u32, t: usize, corrupt: &[u32]) -> bool {
        corrupt.contains(&owner) || self.mask_key.get(&owner).is_some_and(|s| s.len() >= t)
    }

    /// Whether the attacker can strip every mask from `owner`'s masked input: its self mask, and each pairwise
    /// mask with the `partners` it masked with (known when either side's mask key is known).
    pub fn exposes(&self, owner: u32, partners: &[u32], corrupt: &[u32], t: usize) -> bool {
        self.self_mask_known(owner, t)
            && (self.mask_key_known(owner, t, corrupt)
                || partners.iter().all(|&v| self.mask_key_known(v, t, corrupt)))
    }
}
